/**
 * The file system's metadata chunks (repo-format.ts `metadataChunks`): listed from a real ext4
 * image (ext4/metadata.ts), checked by the manifest parser, carried by snapshots, and fetched in
 * the background by ChunkSource.fetchMetadata; and the guest's read-ahead, which fetches from the
 * network only ahead of chunks that came from there.
 */
import "fake-indexeddb/auto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ChunkSource } from "../../src/engine/chunk-source.ts";
import { memoryDevice, type BlockDevice } from "../../src/engine/ext4/block-device.ts";
import { Ext4 } from "../../src/engine/ext4/ext4.ts";
import { metadataChunks } from "../../src/engine/ext4/metadata.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import { carriedMetadataChunks, chunkHash, parseManifest, type DiskManifest } from "../../src/engine/repo-format.ts";
import { mke2fs, scratch } from "./ext4-tools.ts";
import { makeRepository, repositoryOf } from "./repository.ts";

const CHUNK = 64 * 1024;

/** An ext4 image of a tree of folders, each with a few files of data. */
function treeImage(): Uint8Array {
  const { dir, cleanup } = scratch();
  try {
    const root = join(dir, "root");
    for (let a = 0; a < 10; a++) {
      for (let b = 0; b < 2; b++) {
        const folder = join(root, `d${a}`, `e${b}`);
        mkdirSync(folder, { recursive: true });
        for (let f = 0; f < 6; f++) writeFileSync(join(folder, `f${f}`), Buffer.alloc(150_000 + a * 300 + f, a * 8 + b + f + 1));
      }
    }
    const image = join(dir, "disk.img");
    mke2fs(image, 64, ["-t", "ext4"], root);
    return new Uint8Array(readFileSync(image));
  } finally {
    cleanup();
  }
}

describe("metadata chunks", () => {
  it("lists the chunks a whole walk reads, and a walk needs no other chunk", async () => {
    const bytes = treeImage();
    const list = await metadataChunks(memoryDevice(bytes), CHUNK);
    const chunks = bytes.byteLength / CHUNK;
    // Far fewer than the chunks with data: the files' contents are not metadata.
    const withData = Array.from({ length: chunks }, (_, i) => i).filter((i) => bytes.subarray(i * CHUNK, (i + 1) * CHUNK).some((b) => b !== 0));
    expect(list.length).toBeGreaterThan(3);
    expect(list.length).toBeLessThan(withData.length / 2);
    expect(list).toEqual([...list].sort((a, b) => a - b));
    // A device that has only the listed chunks (every other reads as garbage) still walks whole.
    const listed = new Set(list);
    const only: BlockDevice = {
      size: bytes.byteLength,
      read: async (offset, length) => {
        const out = bytes.slice(offset, offset + length);
        for (let c = Math.floor(offset / CHUNK); c * CHUNK < offset + length; c++) {
          if (listed.has(c)) continue;
          const from = Math.max(c * CHUNK, offset) - offset;
          out.fill(0xa5, from, Math.min((c + 1) * CHUNK, offset + length) - offset);
        }
        return out;
      },
    };
    const fs = await Ext4.open(only);
    let paths = 0;
    for await (const entry of fs.walk("/")) if (entry.path.startsWith("/d")) paths++;
    expect(paths).toBe(10 + 10 * 2 + 10 * 2 * 6);
  });

  it("a disk with no ext file system has none", async () => {
    expect(await metadataChunks(memoryDevice(new Uint8Array(4 * CHUNK).fill(7)), CHUNK)).toEqual([]);
  });

  it("the manifest parser takes an ascending list of stored chunks and refuses anything else", () => {
    const { manifest } = makeRepository(8 * CHUNK, CHUNK); // chunk 3 is zeros
    const withList = (list: unknown) => ({ ...(manifest as unknown as Record<string, unknown>), metadataChunks: list });
    expect(parseManifest(withList([0, 2, 5])).metadataChunks).toEqual([0, 2, 5]);
    expect(parseManifest(manifest).metadataChunks).toBeUndefined();
    expect(() => parseManifest(withList([2, 1]))).toThrow(/ascending/);
    expect(() => parseManifest(withList([3]))).toThrow(/not a stored chunk/);
    expect(() => parseManifest(withList([8]))).toThrow(/not a stored chunk/);
    expect(() => parseManifest(withList("0,1"))).toThrow(/must be a list/);
    // A snapshot carries its parent's, less the chunks it has as zeros.
    const parent = { ...manifest, metadataChunks: [0, 2, 5] } as DiskManifest;
    const chunks = [...parent.chunks];
    chunks[2] = null;
    expect(carriedMetadataChunks(parent, chunks)).toEqual({ metadataChunks: [0, 5] });
    expect(carriedMetadataChunks(manifest, chunks)).toEqual({});
  });

  it("are fetched in the background into IndexedDB; one failed request stops it quietly", async () => {
    const image = new Uint8Array(16 * CHUNK).map((_, i) => ((i >> 16) * 31 + i * 7) & 0xff || 1); // every chunk its own
    const { manifest, fetchFn } = repositoryOf(image, CHUNK, "meta");
    manifest.metadataChunks = [1, 4, 5, 9];
    const requested: string[] = [];
    const store = await LocalStore.open("metadata-fetch");
    const source = new ChunkSource(manifest, "http://repo.test/repo/", store, async (url) => (requested.push(url), fetchFn(url)));
    await source.get(4); // the guest read one already: it is not fetched again
    requested.length = 0;
    await source.fetchMetadata(new AbortController().signal, 0);
    expect(requested.length).toBe(3);
    expect(source.stats.metadata).toEqual({ chunks: 3, fetched: 3 });
    expect(await store.hasChunks([1, 4, 5, 9].map((i) => chunkHash(manifest.chunks[i]!)))).toEqual([true, true, true, true]);

    // Another browser, the repository failing: stops after one request each, no retries, no throw.
    const failing = await LocalStore.open("metadata-fetch-failing");
    let calls = 0;
    const down = new ChunkSource(manifest, "http://repo.test/repo/", failing, async () => {
      calls++;
      throw new TypeError("Failed to fetch");
    });
    await down.fetchMetadata(new AbortController().signal, 0);
    expect(down.stats.metadata?.stopped).toBe(true);
    expect(calls).toBeLessThanOrEqual(3);
    expect(down.stats.waiting ?? null).toBeNull();

    // A machine closed before it starts: nothing fetched.
    const closed = new AbortController();
    closed.abort();
    const idle = new ChunkSource(manifest, "http://repo.test/repo/", await LocalStore.open("metadata-fetch-closed"), async (url) => (calls++, fetchFn(url)));
    const before = calls;
    await idle.fetchMetadata(closed.signal, 0);
    expect(calls).toBe(before);
  });

  it("a sequential reader is read ahead from the network only while its chunks come from there", async () => {
    const image = new Uint8Array(32 * CHUNK).map((_, i) => ((i >> 16) * 31 + i * 7) & 0xff || 1);
    const { manifest, fetchFn } = repositoryOf(image, CHUNK, "ahead");
    const requested: number[] = [];
    const counting = async (url: string) => {
      requested.push(manifest.chunks.indexOf(url.split("/").pop()!));
      return fetchFn(url);
    };
    const settle = () => new Promise((ok) => setTimeout(ok, 200));
    const store = await LocalStore.open("read-ahead");
    const first = new ChunkSource(manifest, "http://repo.test/repo/", store, counting);
    await first.get(0);
    await first.get(1); // sequential, from the network: the next 8 are fetched ahead
    await settle();
    expect(requested.sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    // Next session: 0–9 are stored. Reading them in order reads ahead from IndexedDB only.
    requested.length = 0;
    const second = new ChunkSource(manifest, "http://repo.test/repo/", store, counting);
    for (let i = 4; i <= 9; i++) await second.get(i);
    await settle();
    expect(requested).toEqual([]);
    expect(second.stats.cacheChunks).toBe(6);
    // Reading on past them comes from the network, and then is read ahead from there again.
    await second.get(10);
    await second.get(11);
    await settle();
    expect(requested.sort((a, b) => a - b)).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
  });
});
