/**
 * The repository sweep over a real repository and server, in a local folder and in a bucket on a
 * loopback S3 server (backends.ts): a dry run deletes nothing, --delete removes only chunks no
 * manifest references, and a publish in progress (checked, uploaded, manifest not yet put) survives
 * a sweep run in the middle of it. In a bucket the hold is a lease, which expires with the grace period.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { importImage } from "../../scripts/import-image.ts";
import { newSnapshotId, type DiskManifest } from "../../src/engine/repo-format.ts";
import { startServer, type RunningServer } from "../../server/repo-server.ts";
import { sweepRepository } from "../../server/sweep.ts";
import { BACKENDS, openTestRepo, type TestRepo } from "./backends.ts";

const sha = (d: Uint8Array) => createHash("sha256").update(d).digest("hex");
const HOUR = 3600_000;

describe.each(BACKENDS)("sweeping a repository (%s store)", (kind) => {
  let dir: string;
  let repo: TestRepo;
  let server: RunningServer;
  let image: DiskManifest;
  const exists = (rel: string) => repo.exists(rel);
  const age = (rel: string, ms: number) => repo.age(rel, ms);
  const store = () => repo.store;
  const sweepCli = (...args: string[]) =>
    promisify(execFile)("npx", ["tsx", "scripts/sweep-repo.ts", ...(kind === "local" ? ["--repo", repo.spec] : ["--store", repo.spec]), ...args], {
      env: { ...process.env, ...repo.env },
    });

  async function put(path: string, body: BodyInit) {
    const res = await fetch(new URL(path, server.url), { method: "PUT", body });
    return res.status;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sandglass-sweep-"));
    const raw = Buffer.alloc(4 * 65536);
    for (let i = 0; i < 4; i++) raw.fill(`block ${i} `, i * 65536, (i + 1) * 65536);
    await writeFile(join(dir, "disk.img"), raw);
    image = (await importImage({ image: join(dir, "disk.img"), repo: join(dir, "repo"), name: "base", bootDevice: "hda" })).manifest;
    repo = await openTestRepo(kind, join(dir, "repo"));
    await repo.seed();
    server = await startServer({ store: repo.store, uploads: true, uploadToken: "" });
  });

  afterAll(async () => {
    await server?.close();
    await repo?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("reports orphans on a dry run, deletes only them with --delete, and spares a publish in progress", async () => {
    // Every chunk the image has is old; an old orphan (a snapshot whose manifest was never put).
    for (const ref of image.chunks) if (ref) await age(`chunks/${ref}`, 48 * HOUR);
    const orphan = new Uint8Array(65536).fill(1);
    expect(await put(`repo/chunks/${sha(orphan)}`, orphan)).toBe(201);
    await age(`chunks/${sha(orphan)}`, 2 * HOUR);
    await repo.write(`chunks/${sha(orphan)}.upload-1-dead`, "half a chunk");
    await age(`chunks/${sha(orphan)}.upload-1-dead`, 2 * HOUR);

    // A publish in progress: its new chunk is uploaded, and an old chunk it reuses is checked present.
    const fresh = new Uint8Array(65536).fill(2);
    const reused = new Uint8Array(65536).fill(3);
    expect(await put(`repo/chunks/${sha(reused)}`, reused)).toBe(201);
    await age(`chunks/${sha(reused)}`, 5 * HOUR);
    const check = await fetch(new URL("repo/api/missing", server.url), { method: "POST", body: JSON.stringify({ refs: [sha(fresh), sha(reused)] }) });
    expect(await check.json()).toEqual({ missing: [sha(fresh)] });
    expect(await put(`repo/chunks/${sha(fresh)}`, fresh)).toBe(201);

    const dry = await sweepRepository({ store: store() });
    expect(dry.deleted).toBe(false);
    expect(dry.orphans.map((o) => o.file).sort()).toEqual([`chunks/${sha(orphan)}`, `chunks/${sha(orphan)}.upload-1-dead`].sort());
    expect(dry.recent).toBe(2);
    expect(await exists(`chunks/${sha(orphan)}`)).toBe(true);

    // The command line: a dry run by default, and it says so.
    const cli = await sweepCli();
    expect(cli.stdout).toMatch(/2 unreferenced files .* would be deleted \(dry run: add --delete\); 2 unreferenced but touched/);
    const real = await sweepCli("--delete");
    expect(real.stdout).toMatch(/deleted chunks\//);
    expect(await exists(`chunks/${sha(orphan)}`)).toBe(false);
    expect(await exists(`chunks/${sha(orphan)}.upload-1-dead`)).toBe(false);
    for (const ref of image.chunks) if (ref) expect(await exists(`chunks/${ref}`)).toBe(true);

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
    const after = await sweepRepository({ store: store(), graceMs: 0 });
    expect(after.orphans).toEqual([]);
  });

  it("stops, deleting nothing, when a manifest cannot be read", async () => {
    const stray = new Uint8Array(65536).fill(4);
    expect(await put(`repo/chunks/${sha(stray)}`, stray)).toBe(201);
    const broken = `snapshots/${newSnapshotId()}.json`;
    await repo.write(broken, "{ half");
    await expect(sweepRepository({ store: store(), delete: true, graceMs: 0 })).rejects.toThrow(/cannot be read .* nothing was deleted/);
    expect(await exists(`chunks/${sha(stray)}`)).toBe(true);
    await store().remove(broken);
  });

  it.runIf(kind === "s3")("spares a chunk a lease holds for the grace period only, then deletes it and the lease", async () => {
    const held = new Uint8Array(65536).fill(5);
    expect(await put(`repo/chunks/${sha(held)}`, held)).toBe(201);
    await age(`chunks/${sha(held)}`, 3 * HOUR);
    const check = await fetch(new URL("repo/api/missing", server.url), { method: "POST", body: JSON.stringify({ refs: [sha(held)] }) });
    expect(await check.json()).toEqual({ missing: [] });
    const leases = (await store().list(".leases")).map((l) => l.name);
    expect(leases.length).toBeGreaterThan(0);
    const kept = await sweepRepository({ store: store(), delete: true });
    expect(kept.orphans.map((o) => o.file)).not.toContain(`chunks/${sha(held)}`);
    expect(await exists(`chunks/${sha(held)}`)).toBe(true);
    // Every lease so far is made two hours old: none holds anything any more.
    for (const name of leases.concat((await store().list(".leases")).map((l) => l.name))) await age(`.leases/${name}`, 2 * HOUR).catch(() => undefined);
    const swept = await sweepRepository({ store: store(), delete: true });
    expect(swept.orphans.map((o) => o.file)).toContain(`chunks/${sha(held)}`);
    expect(swept.leasesDropped).toBeGreaterThan(0);
    expect(await exists(`chunks/${sha(held)}`)).toBe(false);
    expect(await store().list(".leases")).toEqual([]);
  });
});
