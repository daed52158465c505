/**
 * The repository server's write side over real HTTP, with the repository in a local folder and in
 * a bucket on a loopback S3 server (backends.ts): only verified chunks and valid, complete, new
 * snapshot manifests are accepted; sizes, paths and tokens are enforced; errors are JSON.
 */
import { createHash } from "node:crypto";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { importImage } from "../../scripts/import-image.ts";
import { MAX_CHUNK_BYTES, newSnapshotId, type DiskManifest } from "../../src/engine/repo-format.ts";
import { startServer, type RunningServer } from "../../server/repo-server.ts";
import { BACKENDS, openTestRepo, type TestRepo } from "./backends.ts";

const sha = (d: Uint8Array) => createHash("sha256").update(d).digest("hex");

describe.each(BACKENDS)("%s store", (kind) => {
  let dir: string;
  let repo: TestRepo;
  let open: RunningServer;
  let image: DiskManifest;
  const exists = (rel: string) => repo.exists(rel);
  /** Every file name in the repository and the folder around it (what a traversal would add to). */
  const everything = async () => [...(await readdir(dir)), ...(await Promise.all(["", "chunks", "images", "snapshots", "bios"].map((d) => repo.list(d)))).flat()].sort();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sandglass-uploads-"));
    const raw = Buffer.alloc(4 * 65536);
    raw.fill("image ", 0, 65536);
    await writeFile(join(dir, "disk.img"), raw);
    image = (await importImage({ image: join(dir, "disk.img"), repo: join(dir, "repo"), name: "test", bootDevice: "hda" })).manifest;
    repo = await openTestRepo(kind, join(dir, "repo"));
    await repo.seed();
    open = await startServer({ store: repo.store, uploads: true, uploadToken: "" });
  });

  afterAll(async () => {
    await open?.close();
    await repo?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function put(server: RunningServer, path: string, body: BodyInit, headers: Record<string, string> = {}) {
    const res = await fetch(new URL(path, server.url), { method: "PUT", body, headers, duplex: "half" } as RequestInit);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  function snapshotOf(ref: string, id = newSnapshotId()): DiskManifest {
    return {
      ...image,
      kind: "snapshot",
      name: id,
      chunks: [ref, ...image.chunks.slice(1)],
      parent: { kind: "image", name: "test" },
      machine: { pieces: [ref], stateBytes: 65536, memoryBytes: 64 << 20 },
      sha256: undefined,
    } as DiskManifest;
  }

  describe("chunk uploads", () => {
    const data = new Uint8Array(65536).fill(42);
    const hash = sha(data);

    it("stores a chunk that hashes to its name, once", async () => {
      expect(await put(open, `repo/chunks/${hash}`, data)).toEqual({ status: 201, body: { stored: true, ref: hash } });
      expect(await put(open, `repo/chunks/${hash}`, data)).toEqual({ status: 200, body: { stored: false, ref: hash } });
      const gz = gzipSync(data);
      expect((await put(open, `repo/chunks/${hash}.gz`, gz)).status).toBe(201);
      expect(await repo.read(`chunks/${hash}.gz`)).toEqual(gz);
    });

    it("refuses bytes that do not hash to the name, and writes nothing", async () => {
      const wrong = "ab".repeat(32);
      const res = await put(open, `repo/chunks/${wrong}`, data);
      expect(res.status).toBe(422);
      expect(res.body.error).toMatch(/does not hash to its name/);
      expect(await exists(`chunks/${wrong}`)).toBe(false);
      const notGzip = await put(open, `repo/chunks/${hash}.gz`.replace(hash, sha(new Uint8Array([1]))), data);
      expect(notGzip.status).toBe(422);
    });

    it("refuses oversized uploads, declared or streamed", async () => {
      const big = new Uint8Array(MAX_CHUNK_BYTES + 1);
      const declared = await put(open, `repo/chunks/${sha(big)}`, big);
      expect(declared.status).toBe(413);
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < 3; i++) controller.enqueue(new Uint8Array(MAX_CHUNK_BYTES / 2 + 1));
          controller.close();
        },
      });
      const streamed = await put(open, `repo/chunks/${"cd".repeat(32)}`, stream);
      expect(streamed.status).toBe(413);
      expect(await exists(`chunks/${"cd".repeat(32)}`)).toBe(false);
    });

    it("refuses paths that would leave the repository or write images", async () => {
      const before = await everything();
      for (const path of ["repo/chunks/..%2f..%2fevil", "repo/chunks/%2e%2e%2fimages%2ftest.json", "repo/images/test.json", "repo/bios/seabios.bin", "repo/snapshots/..%2fimages%2ftest.json"]) {
        const res = await put(open, path, "x");
        expect([400, 403, 405]).toContain(res.status);
        expect(typeof res.body.error).toBe("string");
      }
      expect(await everything()).toEqual(before);
      expect(JSON.parse((await repo.read("images/test.json"))!.toString("utf8")).name).toBe("test");
    });

    it("answers which refs are missing", async () => {
      const absent = "ef".repeat(32);
      const res = await fetch(new URL("repo/api/missing", open.url), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refs: [hash, absent, image.chunks[0]] }),
      });
      expect(await res.json()).toEqual({ missing: [absent] });
    });
  });

  describe("snapshot manifests", () => {
    const data = new Uint8Array(65536).fill(9);
    const ref = sha(data);

    it("accepts a valid, complete snapshot and never overwrites it", async () => {
      await put(open, `repo/chunks/${ref}`, data);
      const manifest = snapshotOf(ref);
      const ok = await put(open, `repo/snapshots/${manifest.name}.json`, JSON.stringify(manifest));
      expect(ok).toEqual({ status: 201, body: { stored: true, id: manifest.name } });
      const path = `snapshots/${manifest.name}.json`;
      const stored = (await repo.read(path))!.toString("utf8");
      const changed = { ...manifest, description: "something else" };
      const again = await put(open, `repo/snapshots/${manifest.name}.json`, JSON.stringify(changed));
      expect(again.status).toBe(409);
      expect(again.body.error).toMatch(/immutable/);
      expect((await repo.read(path))!.toString("utf8")).toBe(stored);
      const del = await fetch(new URL(`repo/snapshots/${manifest.name}.json`, open.url), { method: "DELETE" });
      expect(del.status).toBe(405);
      expect(await exists(path)).toBe(true);
    });

    it("refuses truncated, invalid, incomplete and orphaned manifests", async () => {
      const manifest = snapshotOf(ref);
      const text = JSON.stringify(manifest);
      const url = `repo/snapshots/${manifest.name}.json`;
      expect((await put(open, url, text.slice(0, text.length / 2))).status).toBe(400);
      expect((await put(open, url, JSON.stringify({ ...manifest, chunkSize: 1000 }))).status).toBe(422);
      expect((await put(open, url, JSON.stringify({ ...manifest, name: newSnapshotId() }))).status).toBe(422);
      const incomplete = await put(open, url, JSON.stringify(snapshotOf("12".repeat(32), manifest.name)));
      expect(incomplete.status).toBe(409);
      expect(incomplete.body.missing).toEqual(["12".repeat(32)]);
      const orphan = await put(open, url, JSON.stringify({ ...manifest, parent: { kind: "image", name: "nope" } }));
      expect(orphan.status).toBe(409);
      expect(await exists(`snapshots/${manifest.name}.json`)).toBe(false);
      // A snapshot of an image a person brought has no parent here: its chunks are enough.
      const brought = await put(open, url, JSON.stringify({ ...manifest, parent: { kind: "image", name: "mine-1234abcd" }, broughtImage: true }));
      expect(brought.status).toBe(201);
    });
  });

  describe("two server copies on one store", () => {
    it("store a chunk raced through both once: one 201, the rest told it is there", async () => {
      const other = await startServer({ store: repo.store, uploads: true, uploadToken: "" });
      try {
        const data = new Uint8Array(65536).fill(77);
        const results = await Promise.all(Array.from({ length: 12 }, (_, i) => put(i % 2 ? other : open, `repo/chunks/${sha(data)}`, data)));
        expect(results.map((r) => r.status).sort()).toEqual([...Array<number>(11).fill(200), 201]);
        expect(await repo.read(`chunks/${sha(data)}`)).toEqual(Buffer.from(data));
        expect((await repo.list("chunks")).filter((n) => n.includes(".upload-"))).toEqual([]);
      } finally {
        await other.close();
      }
    });
  });

  describe("upload token and switch", () => {
    it("needs the right token when one is set", async () => {
      const guarded = await startServer({ store: repo.store, uploadToken: "s3cret" });
      try {
        const data = new Uint8Array(100).fill(3);
        const path = `repo/chunks/${sha(data)}`;
        expect((await put(guarded, path, data)).status).toBe(401);
        expect((await put(guarded, path, data, { Authorization: "Bearer wrong" })).status).toBe(403);
        expect((await put(guarded, path, data, { Authorization: "Bearer s3cret" })).status).toBe(201);
      } finally {
        await guarded.close();
      }
    });

    it("refuses every write when uploads are off", async () => {
      const off = await startServer({ store: repo.store, uploads: false });
      try {
        const data = new Uint8Array(100).fill(4);
        const res = await put(off, `repo/chunks/${sha(data)}`, data);
        expect(res.status).toBe(403);
        expect(res.body.error).toMatch(/disabled/);
      } finally {
        await off.close();
      }
    });
  });

  describe("a per-publisher cap", () => {
    it("stores up to the cap in an hour, then answers 429 with when to retry; re-sends and checks are free", async () => {
      const capped = await startServer({ store: repo.store, uploadToken: "", uploadBytesPerHour: 3 * 65536 });
      try {
        const chunks = [5, 6, 7, 8].map((v) => new Uint8Array(65536).fill(v));
        for (const c of chunks.slice(0, 3)) expect((await put(capped, `repo/chunks/${sha(c)}`, c)).status).toBe(201);
        // Already stored: costs nothing, still answered.
        expect((await put(capped, `repo/chunks/${sha(chunks[0]!)}`, chunks[0]!)).status).toBe(200);
        const over = await fetch(new URL(`repo/chunks/${sha(chunks[3]!)}`, capped.url), { method: "PUT", body: chunks[3]! });
        expect(over.status).toBe(429);
        expect(Number(over.headers.get("retry-after"))).toBeGreaterThan(3000);
        expect(((await over.json()) as { error: string }).error).toMatch(/uploaded its 192\.0 KiB for this hour; try again in \d+ min/);
        expect(await exists(`chunks/${sha(chunks[3]!)}`)).toBe(false);
        const check = await fetch(new URL("repo/api/missing", capped.url), { method: "POST", body: JSON.stringify({ refs: [sha(chunks[3]!)] }) });
        expect(check.status).toBe(200);
      } finally {
        await capped.close();
      }
    });
  });
});
