/**
 * What the URL asks for. `/` (or `#/`) opens the default image; `#/i/<name>` another image of the
 * repository. Hash routes keep the repository server a plain static host.
 */
export type Route = { kind: "image"; name: string };

export const DEFAULT_IMAGE = "default";

export function parseRoute(hash: string): Route | { kind: "invalid"; reason: string } {
  const path = hash.replace(/^#\/?/, "");
  if (path === "") return { kind: "image", name: DEFAULT_IMAGE };
  const [prefix, name, ...rest] = path.split("/");
  if (prefix === "i" && name && rest.length === 0) {
    const decoded = decodeURIComponent(name);
    if (/^[a-z0-9][a-z0-9._-]{0,63}$/.test(decoded)) return { kind: "image", name: decoded };
    return { kind: "invalid", reason: `"${decoded}" is not a valid image name.` };
  }
  return { kind: "invalid", reason: `The link "#${path}" does not name an image or snapshot.` };
}

/** Base URL of the image repository: served next to the app unless configured otherwise. */
export function repositoryUrl(): string {
  const configured = import.meta.env.VITE_SANDGLASS_REPO as string | undefined;
  return new URL(configured ?? "repo/", document.baseURI).href;
}
