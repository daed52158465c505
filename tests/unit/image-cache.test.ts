/**
 * The image cache (image-cache.ts): over budget or under storage pressure it evicts repository
 * chunks least recently used first, and never a chunk only this browser has (an imported image,
 * a URL image's pinned block, a snapshot from a .sandglass file), nor one an import is writing.
 */
import "fake-indexeddb/auto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { EVICTION_GRACE_MS, ImageCache } from "../../src/engine/image-cache.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import type { DiskManifest } from "../../src/engine/repo-format.ts";
import { LOCAL_REPO } from "../../src/engine/store-format.ts";

const KIB = 1024;
const hash = (n: number) => n.toString(16).padStart(64, "0");
const manifest = (kind: "image" | "snapshot", chunks: number[]): DiskManifest =>
  ({ format: "sandglass-disk", version: 1, kind, name: "x", description: "", created: "", size: chunks.length * 64 * KIB, chunkSize: 64 * KIB, chunks: chunks.map(hash), storedBytes: 0 }) as DiskManifest;

afterEach(() => vi.restoreAllMocks());

describe("image cache", () => {
  it("evicts least recently used fetchable chunks, never what only this browser has", async () => {
    let clock = Date.UTC(2026, 0, 1);
    vi.spyOn(Date, "now").mockImplementation(() => clock);
    const store = await LocalStore.open("image-cache-1");
    // Chunks 1-4: a repository image; 5: an imported image; 6: a .sandglass snapshot; 7: a URL
    // image's pinned block; 8: named by nothing, old (garbage); 9: named by nothing, new (an import).
    await store.putManifest({ url: "http://repo.test/repo/images/a.json", manifest: manifest("image", [1, 2, 3, 4, 6]), fetched: clock, origin: "network" });
    await store.putManifest({ url: `${LOCAL_REPO}images/own.json`, manifest: manifest("image", [5]), fetched: clock, origin: "import" });
    await store.putManifest({ url: "http://repo.test/repo/snapshots/s.json", manifest: manifest("snapshot", [6]), fetched: clock, origin: "bundle" });
    for (const n of [1, 2, 3, 4, 5, 6, 8]) {
      await store.putChunk(hash(n), new Uint8Array(64 * KIB).fill(n));
      clock += 1000;
    }
    await store.pinChunk(`${LOCAL_REPO}images/url.json`, 0, hash(7), new Uint8Array(64 * KIB).fill(7));
    clock += EVICTION_GRACE_MS;
    await store.putChunk(hash(9), new Uint8Array(64 * KIB).fill(9));

    const cache = new ImageCache(Promise.resolve(store));
    // Chunk 1 is read again: now the most recently used of the image's.
    cache.used(hash(1));
    await cache.writeBack();

    const before = await cache.usage();
    expect(before.chunks).toBe(9);
    expect(before.localOnlyBytes).toBe(3 * 64 * KIB); // 5, 6, 7
    expect(before.evictableBytes).toBe(5 * 64 * KIB); // 1-4 and the old orphan 8

    // Over a budget of 7 chunks: the two least recently used evictable ones go (2, 3).
    await cache.setBudget(7 * 64 * KIB);
    const left = [...(await store.chunkMetas()).keys()].sort();
    expect(left).toEqual([1, 4, 5, 6, 7, 8, 9].map(hash).sort());

    // Everything evictable, when asked: only what cannot be fetched again stays (and the import).
    const freed = await cache.evict(Infinity);
    expect(freed.chunks).toBe(3);
    expect([...(await store.chunkMetas()).keys()].sort()).toEqual([5, 6, 7, 9].map(hash).sort());
    for (const n of [5, 6, 7, 9]) expect((await store.getChunk(hash(n)))?.[0]).toBe(n);
    store.close();
  });

  it("under storage pressure evicts down to 80 % of the quota", async () => {
    const store = await LocalStore.open("image-cache-2");
    await store.putManifest({ url: "http://repo.test/repo/images/a.json", manifest: manifest("image", [1, 2, 3, 4]), fetched: 0, origin: "network" });
    for (const n of [1, 2, 3, 4]) await store.putChunk(hash(n), new Uint8Array(64 * KIB).fill(n));
    let usage = 950 * KIB;
    const cache = new ImageCache(Promise.resolve(store), async () => ({ usage, quota: 1000 * KIB }));
    const eviction = await cache.enforce();
    // 950 KiB used of 1000: 150 KiB must go, so three 64 KiB chunks.
    expect(eviction).toEqual({ chunks: 3, bytes: 3 * 64 * KIB });
    usage = 500 * KIB;
    expect(await cache.enforce()).toEqual({ chunks: 0, bytes: 0 });
    store.close();
  });
});
