/**
 * The repository sweep over a real repository and server: a dry run deletes nothing, --delete
 * removes only chunks no manifest references, and a publish in progress (checked, uploaded, manifest
 * not yet put) survives a sweep run in the middle of it.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { importImage } from "../../scripts/import-image.ts";
import { newSnapshotId, type DiskManifest } from "../../src/engine/repo-format.ts";
import { startServer, type RunningServer } from "../../server/repo-server.ts";
import { sweepRepository } from "../../server/sweep.ts";

const sha = (d: Uint8Array) => createHash("sha256").update(d).digest("hex");
const exists = (p: string) => stat(p).then(() => true, () => false);
const HOUR = 3600_000;

let dir: string;
let repo: string;
let server: RunningServer;
let image: DiskManifest;

async function age(path: string, ms: number): Promise<void> {
  const t = new Date(Date.now() - ms);
  await utimes(path, t, t);
}

async function put(path: string, body: BodyInit) {
  const res = await fetch(new URL(path, server.url), { method: "PUT", body });
  return res.status;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sandglass-sweep-"));
  repo = join(dir, "repo");
  const raw = Buffer.alloc(4 * 65536);
  for (let i = 0; i < 4; i++) raw.fill(`block ${i} `, i * 65536, (i + 1) * 65536);
  await writeFile(join(dir, "disk.img"), raw);
  image = (await importImage({ image: join(dir, "disk.img"), repo, name: "base", bootDevice: "hda" })).manifest;
  server = await startServer({ repoRoot: repo, uploads: true, uploadToken: "" });
});

afterAll(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe("sweeping a repository", () => {
  it("reports orphans on a dry run, deletes only them with --delete, and spares a publish in progress", async () => {
    // Every chunk the image has is old; an old orphan (a snapshot whose manifest was never put).
    for (const ref of image.chunks) if (ref) await age(join(repo, "chunks", ref), 48 * HOUR);
    const orphan = new Uint8Array(65536).fill(1);
    expect(await put(`repo/chunks/${sha(orphan)}`, orphan)).toBe(201);
    await age(join(repo, "chunks", sha(orphan)), 2 * HOUR);
    await writeFile(join(repo, "chunks", `${sha(orphan)}.upload-1-dead`), "half a chunk");
    await age(join(repo, "chunks", `${sha(orphan)}.upload-1-dead`), 2 * HOUR);

    // A publish in progress: its new chunk is uploaded, and an old chunk it reuses is checked present.
    const fresh = new Uint8Array(65536).fill(2);
    const reused = new Uint8Array(65536).fill(3);
    expect(await put(`repo/chunks/${sha(reused)}`, reused)).toBe(201);
    await age(join(repo, "chunks", sha(reused)), 5 * HOUR);
    const check = await fetch(new URL("repo/api/missing", server.url), { method: "POST", body: JSON.stringify({ refs: [sha(fresh), sha(reused)] }) });
    expect(await check.json()).toEqual({ missing: [sha(fresh)] });
    expect(await put(`repo/chunks/${sha(fresh)}`, fresh)).toBe(201);

    const dry = await sweepRepository({ repoRoot: repo });
    expect(dry.deleted).toBe(false);
    expect(dry.orphans.map((o) => o.file).sort()).toEqual([`chunks/${sha(orphan)}`, `chunks/${sha(orphan)}.upload-1-dead`].sort());
    expect(dry.recent).toBe(2);
    expect(await exists(join(repo, "chunks", sha(orphan)))).toBe(true);

    // The command line: a dry run by default, and it says so.
    const cli = await promisify(execFile)("npx", ["tsx", "scripts/sweep-repo.ts", "--repo", repo]);
    expect(cli.stdout).toMatch(/2 unreferenced files .* would be deleted \(dry run: add --delete\); 2 unreferenced but touched/);
    const real = await promisify(execFile)("npx", ["tsx", "scripts/sweep-repo.ts", "--repo", repo, "--delete"]);
    expect(real.stdout).toMatch(/deleted chunks\//);
    expect(await exists(join(repo, "chunks", sha(orphan)))).toBe(false);
    expect(await exists(join(repo, "chunks", `${sha(orphan)}.upload-1-dead`))).toBe(false);
    for (const ref of image.chunks) if (ref) expect(await exists(join(repo, "chunks", ref))).toBe(true);

    // The publish finishes after the sweep: both its chunks are still there.
    const id = newSnapshotId();
    const manifest = {
      ...image,
      kind: "snapshot",
      name: id,
      chunks: [sha(fresh), sha(reused), ...image.chunks.slice(2)],
      parent: { kind: "image", name: "base" },
      machine: { pieces: [sha(fresh)], stateBytes: 65536, memoryBytes: 64 << 20 },
      sha256: undefined,
    };
    expect(await put(`repo/snapshots/${id}.json`, JSON.stringify(manifest))).toBe(201);
    const after = await sweepRepository({ repoRoot: repo, graceMs: 0 });
    expect(after.orphans).toEqual([]);
  });

  it("stops, deleting nothing, when a manifest cannot be read", async () => {
    const stray = new Uint8Array(65536).fill(4);
    expect(await put(`repo/chunks/${sha(stray)}`, stray)).toBe(201);
    await mkdir(join(repo, "snapshots"), { recursive: true });
    await writeFile(join(repo, "snapshots", `${newSnapshotId()}.json`), "{ half");
    await expect(sweepRepository({ repoRoot: repo, delete: true, graceMs: 0 })).rejects.toThrow(/cannot be read .* nothing was deleted/);
    expect(await exists(join(repo, "chunks", sha(stray)))).toBe(true);
  });
});
