/**
 * Deleting what no manifest needs: chunks in the repository that no image or snapshot manifest
 * references, and upload temporaries left by a server that died mid-write (a local folder's; an
 * S3 PUT leaves none). Works on either store (store.ts).
 *
 * Safe against publishes in progress: a publish asks `api/missing`, uploads, then puts its
 * manifest, so for a while its chunks are referenced by nothing. The write side holds every chunk
 * it reports present or is sent again (uploads.ts: a refreshed modification time in a folder, a
 * lease in a bucket), and a new chunk is new, so a chunk held or written within the grace period
 * (an hour by default) is never swept. With a bucket, leases written while the sweep runs are read
 * again before each batch of deletions, and leases past the grace period are deleted with --delete.
 * A manifest that cannot be read stops the sweep: its chunks would look unreferenced.
 */
import { describe } from "../src/app/format.ts";
import { isChunkRef, parseManifest, referencedChunks } from "../src/engine/repo-format.ts";
import { LocalStore, inParallel, type RepoStore } from "./store.ts";

export interface SweepOptions {
  /** The repository folder (when no `store` is given). */
  repoRoot?: string;
  store?: RepoStore;
  /** false (the default): only report what would go. */
  delete?: boolean;
  /** Files touched more recently than this are kept (ms; default one hour). */
  graceMs?: number;
  now?: number;
}

export interface SweepReport {
  manifests: number;
  referenced: number;
  /** Unreferenced and older than the grace period: deleted, or would be on a dry run. */
  orphans: { file: string; bytes: number }[];
  /** Unreferenced but touched within the grace period (likely a publish in progress). */
  recent: number;
  bytes: number;
  deleted: boolean;
  /** Expired leases deleted (a bucket's; see store.ts). */
  leasesDropped: number;
}

export class SweepError extends Error {}

export const DEFAULT_GRACE_MS = 60 * 60 * 1000;

/** Deletions between two fresh reads of the leases. */
const BATCH = 200;

export async function sweepRepository(options: SweepOptions): Promise<SweepReport> {
  const store = options.store ?? new LocalStore(options.repoRoot ?? "build/repo");
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const now = options.now ?? Date.now();
  const referenced = new Set<string>();
  let manifests = 0;
  for (const dir of ["images", "snapshots"]) {
    for (const { name } of await store.list(dir)) {
      if (!name.endsWith(".json")) continue;
      let refs: string[];
      try {
        const text = await store.readText(`${dir}/${name}`);
        if (text === null) throw new Error("it vanished while being read");
        refs = referencedChunks(parseManifest(JSON.parse(text)));
      } catch (err) {
        throw new SweepError(`${dir}/${name} cannot be read (${describe(err)}); nothing was deleted, since the chunks it needs would look unused`);
      }
      manifests++;
      for (const ref of refs) referenced.add(ref);
    }
  }
  let held = await store.heldSince(now - graceMs);
  const report: SweepReport = { manifests, referenced: referenced.size, orphans: [], recent: 0, bytes: 0, deleted: false, leasesDropped: 0 };
  // Chunks are listed after the manifests are read: one written since is new, so the grace keeps it.
  // Only unreferenced ones are looked at (a folder stats only those); upload temporaries
  // (store.ts writeAtomic) are swept by the same age rule.
  const unreferenced = (name: string) => name.includes(".upload-") || (isChunkRef(name) && !referenced.has(name));
  for (const { name, size, modified } of await store.list("chunks", unreferenced)) {
    if (now - modified.getTime() < graceMs || held.has(name)) {
      report.recent++;
      continue;
    }
    report.orphans.push({ file: `chunks/${name}`, bytes: size });
    report.bytes += size;
  }
  if (options.delete) {
    const kept: { file: string; bytes: number }[] = [];
    for (let i = 0; i < report.orphans.length; i += BATCH) {
      // Leases written since the last read (a publish that started meanwhile) spare their chunks.
      if (store.kind === "s3" && i > 0) held = await store.heldSince(now - graceMs);
      const batch = report.orphans.slice(i, i + BATCH).filter((o) => {
        const spare = held.has(o.file.slice("chunks/".length));
        if (spare) kept.push(o);
        return !spare;
      });
      await inParallel(batch, 16, (o) => store.remove(o.file));
    }
    if (kept.length > 0) {
      report.orphans = report.orphans.filter((o) => !kept.includes(o));
      report.bytes -= kept.reduce((n, o) => n + o.bytes, 0);
      report.recent += kept.length;
    }
    report.leasesDropped = await store.dropLeases(now - graceMs);
    report.deleted = true;
  }
  return report;
}
