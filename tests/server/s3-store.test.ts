/**
 * The S3 store on a real S3-compatible server on 127.0.0.1 (scripts/s3-test-server.ts): writes
 * are conditional (If-None-Match: *) and a racing second write is refused; two server copies on one
 * bucket take concurrent publishes (the same chunks, different snapshots, through both copies in
 * turn, with the real client code) and nothing is lost, corrupted or written twice; a snapshot id
 * put through both at once is stored once; a storage that does not answer gives 503; CORS for an
 * app on another origin; and objects carry the headers a CDN serving the bucket directly needs.
 */
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { importImage } from "../../scripts/import-image.ts";
import { publishImages } from "../../scripts/publish-image.ts";
import { sharedChunks, syntheticSnapshot } from "../../scripts/bench/publish-load.ts";
import { S3_TEST_CREDENTIALS, startS3TestServer, type S3TestServer } from "../../scripts/s3-test-server.ts";
import { chunkHash, referencedChunks, type DiskManifest } from "../../src/engine/repo-format.ts";
import { uploadSnapshot } from "../../src/engine/snapshot.ts";
import { startServer, type RunningServer } from "../../server/repo-server.ts";
import { S3Store, openStore } from "../../server/store.ts";

let dir: string;
let s3: S3TestServer;
let parent: DiskManifest;
/** Two server copies, each with a store of its own (as two processes would have). */
let copies: RunningServer[];
const store = () => openStore(`s3://${s3.bucket}/repo`, s3.env()) as S3Store;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sandglass-s3-"));
  const raw = Buffer.alloc(16 * 65536);
  for (let i = 0; i < 16; i++) raw.fill(`parent ${i} `, i * 65536, (i + 1) * 65536);
  await writeFile(join(dir, "parent.img"), raw);
  parent = (await importImage({ image: join(dir, "parent.img"), repo: join(dir, "local"), name: "parent", bootDevice: "hda" })).manifest;
  s3 = await startS3TestServer();
  await publishImages({ from: join(dir, "local"), to: store(), images: ["parent"] });
  copies = [await startServer({ store: store(), uploadToken: "" }), await startServer({ store: store(), uploadToken: "" })];
});

afterAll(async () => {
  for (const c of copies ?? []) await c.close();
  await s3?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("the S3 store", () => {
  it("writes only if absent: the S3 server refuses the second conditional PUT, and Sandglass sends the condition", async () => {
    const a = store();
    expect(await a.create("chunks/race-test", "first")).toBe(true);
    expect(await a.create("chunks/race-test", "second")).toBe(false);
    expect((await a.readBytes("chunks/race-test"))!.toString()).toBe("first");
    // Ten writers at once on one new key: exactly one wins.
    const wins = await Promise.all(Array.from({ length: 10 }, (_, i) => store().create("chunks/race-10", `writer ${i}`)));
    expect(wins.filter(Boolean)).toHaveLength(1);
    await a.remove("chunks/race-test");
    await a.remove("chunks/race-10");
  });

  it("takes concurrent publishes through two copies: same chunks, different snapshots, nothing lost or written twice", async () => {
    const from = s3.requests.length;
    const preconditions = s3.preconditionsFailed;
    const shared = sharedChunks(10);
    const snapshots = Array.from({ length: 8 }, () => syntheticSnapshot(parent, 30, shared));
    let turn = 0;
    const statuses: number[] = [];
    // A load balancer: every request to the next copy.
    const viaBoth = async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(String(input));
      url.host = new URL(copies[turn++ % 2]!.url).host;
      const res = await fetch(url, init);
      if (init?.method === "PUT" && url.pathname.startsWith("/repo/chunks/")) statuses.push(res.status);
      return res;
    };
    const results = await Promise.all(snapshots.map((s) => uploadSnapshot(new URL("repo/", copies[0]!.url).href, s, viaBoth)));
    expect(results.map((r) => r.id).sort()).toEqual(snapshots.map((s) => s.manifest.name).sort());

    const distinct = new Map<string, Uint8Array>();
    for (const s of snapshots) for (const [ref, data] of s.files) distinct.set(ref, data);
    expect(distinct.size).toBe(10 + 8 * 20);
    // Each distinct chunk was stored by exactly one copy; the others were told it was there.
    expect(statuses.filter((s) => s === 201)).toHaveLength(distinct.size);
    expect(statuses.every((s) => s === 201 || s === 200)).toBe(true);
    const writes = s3.requests.slice(from).filter((r) => r.method === "PUT" && r.key.startsWith("repo/chunks/"));
    expect(writes.every((r) => r.ifNoneMatch === "*")).toBe(true);
    const written = writes.filter((r) => r.status === 200).map((r) => r.key);
    expect(new Set(written).size).toBe(written.length);
    expect(written).toHaveLength(distinct.size);
    // The shared chunks were raced on: some writes were refused by the store, not by a check first.
    expect(s3.preconditionsFailed - preconditions).toBeGreaterThan(0);

    // In the bucket: every snapshot as sent, every chunk whole, nothing more.
    const s = store();
    for (const snap of snapshots) expect(await s.readText(`snapshots/${snap.manifest.name}.json`)).toBe(JSON.stringify(snap.manifest) + "\n");
    for (const [ref] of distinct) expect(createHash("sha256").update((await s.readBytes(`chunks/${ref}`))!).digest("hex")).toBe(chunkHash(ref));
    const inBucket = new Set((await s.list("chunks")).map((f) => f.name));
    const expected = new Set([...referencedChunks(parent), ...distinct.keys()]);
    expect(inBucket).toEqual(expected);
  });

  it("stores a snapshot id put through both copies at once once: the same bytes are a re-send, others a conflict", async () => {
    const shared = sharedChunks(0);
    const snap = syntheticSnapshot(parent, 3, shared);
    for (const [ref, data] of snap.files) await fetch(new URL(`repo/chunks/${ref}`, copies[0]!.url), { method: "PUT", body: data as Uint8Array<ArrayBuffer> });
    const body = JSON.stringify(snap.manifest);
    const same = await Promise.all(copies.map((c) => fetch(new URL(`repo/snapshots/${snap.manifest.name}.json`, c.url), { method: "PUT", body })));
    expect(same.map((r) => r.status).sort()).toEqual([200, 201]);
    const other = syntheticSnapshot(parent, 3, shared);
    for (const [ref, data] of other.files) await fetch(new URL(`repo/chunks/${ref}`, copies[0]!.url), { method: "PUT", body: data as Uint8Array<ArrayBuffer> });
    const changed = [JSON.stringify({ ...other.manifest, description: "one" }), JSON.stringify({ ...other.manifest, description: "two" })];
    const raced = await Promise.all(copies.map((c, i) => fetch(new URL(`repo/snapshots/${other.manifest.name}.json`, c.url), { method: "PUT", body: changed[i] })));
    expect(raced.map((r) => r.status).sort()).toEqual([201, 409]);
    const kept = JSON.parse((await store().readText(`snapshots/${other.manifest.name}.json`))!) as DiskManifest;
    expect(["one", "two"]).toContain(kept.description);
  });

  it("answers 503 with a message when the storage does not answer", async () => {
    const dead = new S3Store({ bucket: "sandglass", prefix: "repo", endpoint: "http://127.0.0.1:9", credentials: S3_TEST_CREDENTIALS });
    const server = await startServer({ store: dead });
    try {
      const res = await fetch(new URL("repo/images/parent.json", server.url));
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("5");
      expect(((await res.json()) as { error: string }).error).toMatch(/storage failed to read images\/parent.json/);
      const put = await fetch(new URL(`repo/chunks/${"ab".repeat(32)}`, server.url), { method: "PUT", body: "x" });
      expect(put.status).toBe(422); // checked before the store is asked: nothing to store
    } finally {
      await server.close();
    }
  });

  it("lets an app on another origin publish (CORS preflight and headers) when configured", async () => {
    const server = await startServer({ store: store(), uploadToken: "", corsOrigin: "https://app.example" });
    try {
      const pre = await fetch(new URL(`repo/chunks/${"cd".repeat(32)}`, server.url), {
        method: "OPTIONS",
        headers: { Origin: "https://app.example", "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type" },
      });
      expect(pre.status).toBe(204);
      expect(pre.headers.get("access-control-allow-origin")).toBe("https://app.example");
      expect(pre.headers.get("access-control-allow-methods")).toContain("PUT");
      const missing = await fetch(new URL("repo/api/missing", server.url), { method: "POST", headers: { Origin: "https://app.example" }, body: JSON.stringify({ refs: [] }) });
      expect(missing.headers.get("access-control-allow-origin")).toBe("https://app.example");
      const gz = parent.chunks.find((c) => c?.endsWith(".gz"))!;
      const chunk = await fetch(new URL(`repo/chunks/${gz}`, server.url), { headers: { "Accept-Encoding": "gzip" } });
      expect(chunk.headers.get("vary")).toBe("Origin, Accept-Encoding");
      // Without the option, no CORS: OPTIONS is refused as before.
      expect((await fetch(new URL("repo/api/missing", copies[0]!.url), { method: "OPTIONS" })).status).toBe(405);
    } finally {
      await server.close();
    }
  });

  it("stores objects with the headers a CDN serving the bucket directly passes on", async () => {
    const ref = parent.chunks.find((c) => c !== null)!;
    const direct = await fetch(`${s3.endpoint}/${s3.bucket}/repo/chunks/${ref}`, { headers: { Origin: "https://app.example" } });
    expect(direct.status).toBe(200);
    expect(direct.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(direct.headers.get("content-type")).toBe(ref.endsWith(".gz") ? "application/gzip" : "application/octet-stream");
    expect(direct.headers.get("access-control-allow-origin")).toBe("*");
    const manifest = await fetch(`${s3.endpoint}/${s3.bucket}/repo/images/parent.json`);
    expect(manifest.headers.get("cache-control")).toBe("no-cache");
    expect(manifest.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(((await manifest.json()) as DiskManifest).name).toBe("parent");
    // Leases are not served through the server (hidden names), whatever the bucket holds.
    expect((await fetch(new URL("repo/.leases/x.json", copies[0]!.url))).status).toBe(400);
  });
});
