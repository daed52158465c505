/**
 * The repository server over real HTTP on 127.0.0.1, with the repository in a local folder and in
 * a bucket on a loopback S3 server (backends.ts): content types, immutable caching, ETags, range
 * requests, traversal safety and JSON errors; and the import tool's output format.
 */
import { createHash } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { importImage } from "../../scripts/import-image.ts";
import { chunkHash, parseManifest, type DiskManifest } from "../../src/engine/repo-format.ts";
import { startServer, type RequestRecord, type RunningServer } from "../../server/repo-server.ts";
import { BACKENDS, openTestRepo, type TestRepo } from "./backends.ts";

const CHUNK = 64 * 1024;
let dir: string;
let app: string;
let manifest: DiskManifest;
let image: Buffer;
const requests: RequestRecord[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sandglass-repo-"));
  // 6 chunks: text (compressible), zeros, random (incompressible), a repeat of chunk 0, zeros, a short tail.
  image = Buffer.alloc(5 * CHUNK + 4096);
  image.fill("sandglass ", 0, CHUNK);
  for (let i = 2 * CHUNK; i < 3 * CHUNK; i++) image[i] = createHash("sha256").update(String(i)).digest()[0]!;
  image.copy(image, 3 * CHUNK, 0, CHUNK);
  image.fill(7, 5 * CHUNK);
  await writeFile(join(dir, "disk.img"), image);
  app = join(dir, "app");
  await rm(app, { recursive: true, force: true });
  await import("node:fs/promises").then((fs) => fs.mkdir(join(app, "assets"), { recursive: true }));
  await writeFile(join(app, "index.html"), "<!doctype html><title>app</title>");
  await writeFile(join(app, "assets", "main-abc.js"), "console.log(1)");
  const result = await importImage({ image: join(dir, "disk.img"), repo: join(dir, "repo"), name: "test", description: "t", bootDevice: "hda" });
  manifest = result.manifest;
  await writeFile(join(dir, "repo", "raw.img"), image);
  await writeFile(join(dir, "secret.txt"), "outside");
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("import tool", () => {
  it("writes a valid manifest: zero chunks left out, repeats stored once, compression only when smaller", async () => {
    expect(parseManifest(manifest)).toEqual(manifest);
    expect(manifest.size).toBe(image.length);
    expect(manifest.chunks).toHaveLength(6);
    expect(manifest.chunks[1]).toBeNull();
    expect(manifest.chunks[4]).toBeNull();
    expect(manifest.chunks[0]).toBe(manifest.chunks[3]);
    expect(manifest.chunks[0]).toMatch(/\.gz$/);
    expect(manifest.chunks[2]).not.toMatch(/\.gz$/);
    expect(manifest.sha256).toBe(createHash("sha256").update(image).digest("hex"));
    const files = await readdir(join(dir, "repo", "chunks"));
    expect(files.sort()).toEqual([manifest.chunks[0], manifest.chunks[2], manifest.chunks[5]].sort());
    for (const [i, ref] of manifest.chunks.entries()) {
      if (!ref) continue;
      let data = await readFile(join(dir, "repo", "chunks", ref));
      if (ref.endsWith(".gz")) data = gunzipSync(data);
      expect(createHash("sha256").update(data).digest("hex")).toBe(chunkHash(ref));
      expect(data.equals(image.subarray(i * CHUNK, (i + 1) * CHUNK))).toBe(true);
    }
  });

  it("re-importing the same image writes nothing", async () => {
    const again = await importImage({ image: join(dir, "disk.img"), repo: join(dir, "repo"), name: "test", description: "t", bootDevice: "hda" });
    expect(again.written).toBe(0);
    expect(again.unchanged).toBe(true);
  });

  it("refuses bad names", async () => {
    await expect(importImage({ image: join(dir, "disk.img"), repo: join(dir, "repo"), name: "../x", bootDevice: "hda" })).rejects.toThrow(/not a valid/);
  });
});

describe.each(BACKENDS)("repository server (%s store)", (kind) => {
  let repo: TestRepo;
  let server: RunningServer;
  const get = (path: string, init?: RequestInit) => fetch(new URL(path, server.url), init);

  beforeAll(async () => {
    repo = await openTestRepo(kind, join(dir, "repo"));
    await repo.seed();
    server = await startServer({ store: repo.store, appRoot: app, onRequest: (r) => requests.push(r) });
  });

  afterAll(async () => {
    await server?.close();
    await repo?.close();
  });

  it("serves manifests as JSON that revalidate by ETag", async () => {
    const res = await get("/repo/images/test.json");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/application\/json/);
    expect(res.headers.get("cache-control")).toBe("no-cache");
    const etag = res.headers.get("etag")!;
    expect(etag).toBeTruthy();
    expect(parseManifest(await res.json()).name).toBe("test");
    const again = await get("/repo/images/test.json", { headers: { "If-None-Match": etag } });
    expect(again.status).toBe(304);
  });

  it("serves chunks as immutable, gzip'd ones as Content-Encoding unless asked for the stored bytes", async () => {
    const ref = manifest.chunks[0]!;
    expect(ref.endsWith(".gz")).toBe(true);
    const stored = (await repo.read(`chunks/${ref}`))!;
    // A client that takes gzip gets the content, inflated by its HTTP stack.
    const res = await get(`/repo/chunks/${ref}`, { headers: { "Accept-Encoding": "gzip" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toContain("immutable");
    expect(res.headers.get("content-encoding")).toBe("gzip");
    expect(res.headers.get("vary")).toBe("Accept-Encoding");
    expect(Buffer.from(await res.arrayBuffer()).equals(image.subarray(0, CHUNK))).toBe(true);
    expect(requests.at(-1)).toMatchObject({ method: "GET", path: `/repo/chunks/${ref}`, status: 200, bytes: stored.length });
    // "?encoding=identity" (a reader retrying a bad copy): the stored gzip bytes as they are.
    const raw = await get(`/repo/chunks/${ref}?encoding=identity`, { headers: { "Accept-Encoding": "gzip" } });
    expect(raw.headers.get("content-type")).toBe("application/gzip");
    expect(raw.headers.get("content-encoding")).toBeNull();
    const body = Buffer.from(await raw.arrayBuffer());
    expect(body.equals(stored)).toBe(true);
    expect(gunzipSync(body).equals(image.subarray(0, CHUNK))).toBe(true);
  });

  it("answers range requests on raw images", async () => {
    const res = await get("/repo/raw.img", { headers: { Range: "bytes=65536-65545" } });
    expect(res.status).toBe(206);
    expect(res.headers.get("content-range")).toBe(`bytes 65536-65545/${image.length}`);
    expect(Buffer.from(await res.arrayBuffer()).equals(image.subarray(65536, 65546))).toBe(true);
    const suffix = await get("/repo/raw.img", { headers: { Range: "bytes=-4" } });
    expect(suffix.status).toBe(206);
    expect(Buffer.from(await suffix.arrayBuffer()).equals(image.subarray(image.length - 4))).toBe(true);
    const bad = await get("/repo/raw.img", { headers: { Range: `bytes=${image.length}-` } });
    expect(bad.status).toBe(416);
    expect(bad.headers.get("content-range")).toBe(`bytes */${image.length}`);
    const head = await get("/repo/raw.img", { method: "HEAD" });
    expect(head.headers.get("content-length")).toBe(String(image.length));
    expect(head.headers.get("accept-ranges")).toBe("bytes");
  });

  it("refuses paths that leave the repository, with JSON errors", async () => {
    for (const path of ["/repo/../secret.txt", "/repo/%2e%2e/secret.txt", "/repo/..%2fsecret.txt", "/repo/chunks/%00x"]) {
      const res = await get(path);
      expect([400, 404]).toContain(res.status);
      const body = (await res.json()) as { error: string };
      expect(body.error).toBeTruthy();
      expect(JSON.stringify(body)).not.toContain("outside");
    }
    const missing = await get("/repo/images/nope.json");
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: string }).error).toMatch(/Not in the repository/);
  });

  it("refuses methods other than GET and HEAD", async () => {
    const res = await get("/repo/images/test.json", { method: "DELETE" });
    expect(res.status).toBe(405);
    expect((await repo.read("images/test.json"))!.toString("utf8")).toContain("sandglass-disk");
  });

  it("serves the app with immutable hashed assets and index.html for unknown routes", async () => {
    const index = await get("/");
    expect(index.headers.get("content-type")).toMatch(/text\/html/);
    const asset = await get("/assets/main-abc.js");
    expect(asset.headers.get("cache-control")).toContain("immutable");
    expect(asset.headers.get("content-type")).toMatch(/javascript/);
    const route = await get("/some/route");
    expect(await route.text()).toContain("<title>app</title>");
    expect((await get("/missing.js")).status).toBe(404);
  });
});
