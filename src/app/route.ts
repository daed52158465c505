/**
 * What the URL asks for. Hash routes keep the repository server a plain static host.
 *   `#/` (or nothing)  the default image's machine in this browser (created on first visit)
 *   `#/i/<name>`       machine of another image of the repository
 *   `#/m/<id>`         a specific local machine (the machines menu links there)
 *   `#/new/<name>`     a new machine started fresh from an image, beside the existing ones
 *   `#/s/<id>`         a shared snapshot: resumes the machine at exactly that point
 */
import { isValidImageName, isValidSnapshotId } from "../engine/repo-format.ts";

export type Route =
  | { kind: "image"; name: string; fresh?: boolean }
  | { kind: "snapshot"; id: string }
  | { kind: "machine"; id: string };

export const DEFAULT_IMAGE = "default";

export function parseRoute(hash: string): Route | { kind: "invalid"; reason: string } {
  const path = hash.replace(/^#\/?/, "");
  if (path === "") return { kind: "image", name: DEFAULT_IMAGE };
  const [prefix, raw, ...rest] = path.split("/");
  let value: string | undefined;
  try {
    value = raw === undefined ? undefined : decodeURIComponent(raw);
  } catch {
    value = undefined;
  }
  if (value && rest.length === 0) {
    if (prefix === "i" || prefix === "new") {
      if (isValidImageName(value)) return { kind: "image", name: value, ...(prefix === "new" ? { fresh: true } : {}) };
      return { kind: "invalid", reason: `"${value}" is not a valid image name.` };
    }
    if (prefix === "m" && /^[0-9a-f-]{36}$/.test(value)) return { kind: "machine", id: value };
    if (prefix === "s") {
      if (isValidSnapshotId(value)) return { kind: "snapshot", id: value };
      return { kind: "invalid", reason: `"${value}" is not a snapshot id: the link may have been cut short when it was copied.` };
    }
  }
  return { kind: "invalid", reason: `The link "#${path}" does not name an image, machine or snapshot.` };
}

export function machineHash(id: string): string {
  return `#/m/${id}`;
}

export function snapshotHash(id: string): string {
  return `#/s/${id}`;
}

/** A repository's base URL as files below it resolve against: ".../repo" is taken as ".../repo/". */
function asBase(url: string): string {
  const href = new URL(url, document.baseURI).href;
  return href.endsWith("/") ? href : `${href}/`;
}

/** Base URL of the image repository: served next to the app unless configured otherwise. */
export function repositoryUrl(): string {
  return asBase(import.meta.env.VITE_SANDGLASS_REPO || "repo/");
}

/**
 * Where publishing uploads the repository's snapshots: a Sandglass server's repository URL
 * (`VITE_SANDGLASS_PUBLISH`), which checks every upload, when reads come straight from a bucket
 * or CDN that must take no writes; unset, the repository itself (its server takes them).
 */
export function publishUrl(): string {
  const configured = import.meta.env.VITE_SANDGLASS_PUBLISH;
  return configured ? asBase(configured) : repositoryUrl();
}
