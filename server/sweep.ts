/**
 * Deleting what no manifest needs: chunks in the repository that no image or snapshot manifest
 * references, and upload temporaries left by a server that died mid-write.
 *
 * Safe against publishes in progress: a publish asks `api/missing`, uploads, then puts its
 * manifest, so for a while its chunks are referenced by nothing. The write side refreshes the
 * modification time of every chunk it reports present or is sent again (uploads.ts), and a new
 * chunk is new, so a chunk touched within the grace period (an hour by default) is never swept.
 * A manifest that cannot be read stops the sweep: its chunks would look unreferenced.
 */
import { readFile, readdir, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { describe } from "../src/app/format.ts";
import { isChunkRef, parseManifest, referencedChunks } from "../src/engine/repo-format.ts";

export interface SweepOptions {
  repoRoot: string;
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
}

export class SweepError extends Error {}

export const DEFAULT_GRACE_MS = 60 * 60 * 1000;

async function names(dir: string): Promise<string[]> {
  return readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw err;
  });
}

export async function sweepRepository(options: SweepOptions): Promise<SweepReport> {
  const { repoRoot } = options;
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const now = options.now ?? Date.now();
  const referenced = new Set<string>();
  let manifests = 0;
  for (const dir of ["images", "snapshots"]) {
    for (const name of await names(join(repoRoot, dir))) {
      if (!name.endsWith(".json")) continue;
      const path = join(repoRoot, dir, name);
      let refs: string[];
      try {
        refs = referencedChunks(parseManifest(JSON.parse(await readFile(path, "utf8"))));
      } catch (err) {
        throw new SweepError(`${dir}/${name} cannot be read (${describe(err)}); nothing was deleted, since the chunks it needs would look unused`);
      }
      manifests++;
      for (const ref of refs) referenced.add(ref);
    }
  }
  const report: SweepReport = { manifests, referenced: referenced.size, orphans: [], recent: 0, bytes: 0, deleted: false };
  const chunkDir = join(repoRoot, "chunks");
  for (const name of await names(chunkDir)) {
    // Upload temporaries (uploads.ts writeAtomic) are swept by the same age rule.
    const temporary = name.includes(".upload-");
    if (!temporary && (!isChunkRef(name) || referenced.has(name))) continue;
    const s = await stat(join(chunkDir, name)).catch(() => null);
    if (!s?.isFile()) continue;
    if (now - s.mtimeMs < graceMs) {
      report.recent++;
      continue;
    }
    report.orphans.push({ file: `chunks/${name}`, bytes: s.size });
    report.bytes += s.size;
  }
  if (options.delete) {
    for (const { file } of report.orphans) await unlink(join(repoRoot, file)).catch(() => undefined);
    report.deleted = true;
  }
  return report;
}
