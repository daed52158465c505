/**
 * An image read from a URL, below the page (remote-image.ts, image-import.ts importUrl, the chunk
 * source's remote path): the causes a URL cannot be used are told apart, chunks are fetched by
 * Range once and pinned, and a file that changes (validators, size, or content with no
 * validators at all) is refused while what was pinned keeps working. Fake fetch, fake-indexeddb.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { ChunkSource, manifestUrl, type Fetch } from "../../src/engine/chunk-source.ts";
import { importUrl, inspectUrl, forgetOwnImage } from "../../src/engine/image-import.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import { probeRemote, RemoteBlocks, RemoteChangedError } from "../../src/engine/remote-image.ts";
import { LOCAL_REPO, type MachineSource } from "../../src/engine/store-format.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const settings = { bootDevice: "cdrom" as const, memoryBytes: 64 * MiB, vgaMemoryBytes: 8 * MiB };
const URL_ = "http://images.test/live.iso";

function iso(size: number, fill: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0x10000; i < size; i++) b[i] = (i * 7 + fill) & 0xff;
  b[0x8000] = 1;
  b.set(new TextEncoder().encode("CD001"), 0x8001);
  new DataView(b.buffer).setUint32(0x8050, size / 2048, true);
  new DataView(b.buffer).setUint16(0x8080, 2048, true);
  return b;
}

/** A web server in a function: Range, validators, CORS and failures as asked. */
function host(options: { range?: boolean; cors?: boolean; validators?: boolean } = {}) {
  const state = { file: iso(1 * MiB, 1), etag: '"v1"', requests: 0, ranges: [] as string[] };
  const fetchFn: Fetch = async (_url, init) => {
    if (init?.mode === "no-cors") return new Response(null, { status: 200 });
    if (options.cors === false) throw new TypeError("Failed to fetch");
    state.requests++;
    const headers = new Headers(options.validators === false ? {} : { etag: state.etag, "last-modified": "Wed, 02 Dec 2026 10:00:00 GMT" });
    const range = /^bytes=(\d+)-(\d+)$/.exec(new Headers(init?.headers).get("range") ?? "");
    if (init?.method === "HEAD") return new Response(null, { status: 200, headers: { ...Object.fromEntries(headers), "content-length": String(state.file.length) } });
    if (!range || options.range === false) return new Response(state.file.slice(), { status: 200, headers });
    state.ranges.push(range[0]);
    const [start, end] = [Number(range[1]), Math.min(Number(range[2]), state.file.length - 1)];
    headers.set("content-range", `bytes ${start}-${end}/${state.file.length}`);
    return new Response(state.file.slice(start, end + 1), { status: 206, headers });
  };
  return { state, fetchFn };
}

let dbCount = 0;
const freshStore = () => LocalStore.open(`remote-test-${++dbCount}`);

async function openBase(store: LocalStore, fetchFn: Fetch, source: MachineSource) {
  const record = (await store.getManifest(manifestUrl(source)))!;
  const blocks = new RemoteBlocks(record.remote!, record.manifest.chunkSize, fetchFn);
  return new ChunkSource(record.manifest, LOCAL_REPO, store, fetchFn, { blocks, pins: await store.listPins(record.url), key: record.url });
}

describe("opening an image from a URL", () => {
  it("names the cause when a URL cannot be used", async () => {
    await expect(inspectUrl("ftp://x/y.iso", host().fetchFn)).rejects.toThrow(/Only http/);
    await expect(inspectUrl("not a url", host().fetchFn)).rejects.toThrow(/not a URL/);
    await expect(probeRemote(URL_, host({ range: false }).fetchFn, 36 * KiB)).rejects.toThrow(/does not answer HTTP Range/);
    await expect(probeRemote(URL_, host({ cors: false }).fetchFn, 36 * KiB)).rejects.toThrow(/no CORS header/);
    const down: Fetch = () => Promise.reject(new TypeError("Failed to fetch"));
    await expect(probeRemote(URL_, down, 36 * KiB)).rejects.toThrow(/Could not reach images.test/);
    const found = await inspectUrl(URL_, host().fetchFn);
    expect(found.detected.bootDevice).toBe("cdrom");
    expect(found.size).toBe(1 * MiB);
  });

  it("fetches each chunk once by Range, pins it, and reads it from the store on the next visit", async () => {
    const store = await freshStore();
    const { state, fetchFn } = host();
    const { source } = await importUrl(store, URL_, settings, fetchFn);
    const first = await openBase(store, fetchFn, source);
    const before = state.requests;
    const chunk3 = await first.get(3);
    expect(chunk3).toEqual(state.file.subarray(3 * 64 * KiB, 4 * 64 * KiB));
    expect(state.ranges.at(-1)).toBe(`bytes=${3 * 64 * KiB}-${4 * 64 * KiB - 1}`);
    await first.get(4); // sequential: the next ones are prefetched too
    await new Promise((r) => setTimeout(r, 50));
    expect(first.unknownChunks).toBeLessThan(16 - 2);
    const second = await openBase(store, fetchFn, source);
    const requests = state.requests;
    await expect(second.verifyRemote()).resolves.toBeUndefined(); // one pinned chunk fetched again
    expect(state.requests).toBe(requests + 1);
    expect(await second.get(3)).toEqual(chunk3);
    expect(state.requests).toBe(requests + 1);
    expect(before).toBeGreaterThan(0);
    // The same URL, unchanged, is the same image; forgetting it deletes its pins and chunks.
    expect((await importUrl(store, URL_, settings, fetchFn)).source).toEqual(source);
    await forgetOwnImage(store, source);
    expect((await store.listPins(manifestUrl(source))).size).toBe(0);
    expect(await store.getManifest(manifestUrl(source))).toBeUndefined();
  });

  it("counts the bytes of the file not fetched yet, down to none once fetchAll has read the rest", async () => {
    const store = await freshStore();
    const { state, fetchFn } = host();
    state.file = iso(1 * MiB - 4 * KiB, 2); // a short last chunk: counted by its bytes in the file
    const { source } = await importUrl(store, URL_, settings, fetchFn);
    const base = await openBase(store, fetchFn, source);
    expect(base.stats.remoteBytes).toBe(state.file.length);
    const unread = base.stats.remoteUnreadBytes!;
    expect(unread).toBeGreaterThan(state.file.length - 2 * 64 * KiB); // the probe pinned at most the start
    await base.get(5);
    expect(base.stats.remoteUnreadBytes).toBeLessThanOrEqual(unread - 64 * KiB);
    await base.fetchAll();
    expect(base.unknownChunks).toBe(0);
    expect(base.stats.remoteUnreadBytes).toBe(0);
    // A later visit starts from what is pinned.
    expect((await openBase(store, fetchFn, source)).stats.remoteUnreadBytes).toBe(0);
  });

  it("fetchAll asks for neighbouring chunks together, and every chunk reads back as the file from the store", async () => {
    const store = await freshStore();
    const { state, fetchFn } = host();
    state.file = iso(3 * MiB - 4 * KiB, 3); // 48 chunks, the last one short
    const { source } = await importUrl(store, URL_, settings, fetchFn);
    const base = await openBase(store, fetchFn, source);
    await base.get(20, false); // one read by the guest first: the runs go around it
    const missing = base.unknownChunks;
    const before = state.requests;
    const rangesBefore = state.ranges.length;
    await base.fetchAll();
    const requests = state.requests - before;
    expect(base.unknownChunks).toBe(0);
    expect(requests).toBeLessThanOrEqual(Math.ceil(missing / 16) + 2);
    expect(requests).toBeLessThan(missing / 4);
    for (const range of state.ranges.slice(rangesBefore)) {
      const [, start, end] = /^bytes=(\d+)-(\d+)$/.exec(range)!.map(Number);
      expect(end! - start! + 1).toBeLessThanOrEqual(1 * MiB);
    }
    const again = await openBase(store, fetchFn, source);
    const afterAll = state.requests;
    for (let i = 0; i < 48; i++) {
      const expected = state.file.subarray(i * 64 * KiB, Math.min((i + 1) * 64 * KiB, state.file.length));
      // Buffer's compare: vitest's deep equality takes ~0.2 s per 64 KiB.
      expect(Buffer.compare((await again.get(i, false)).subarray(0, expected.length), expected), `chunk ${i}`).toBe(0);
    }
    expect(state.requests).toBe(afterAll);
  });

  it("refuses a file that changed (ETag), while chunks pinned before still read", async () => {
    const store = await freshStore();
    const { state, fetchFn } = host();
    const { source } = await importUrl(store, URL_, settings, fetchFn);
    const base = await openBase(store, fetchFn, source);
    const pinned = await base.get(2);
    state.file = iso(1 * MiB, 2);
    state.etag = '"v2"';
    const again = await openBase(store, fetchFn, source);
    await expect(again.verifyRemote()).rejects.toThrow(RemoteChangedError);
    await expect(again.get(9)).rejects.toThrow(/has changed since this machine first read it \(its ETag is different\)/);
    expect(await again.get(2)).toEqual(pinned);
  });

  it("catches a changed file with no validators by a pinned chunk's hash, and a new size by Content-Range", async () => {
    const store = await freshStore();
    const { state, fetchFn } = host({ validators: false });
    const { source } = await importUrl(store, URL_, settings, fetchFn);
    await (await openBase(store, fetchFn, source)).get(5);
    state.file = iso(1 * MiB, 3);
    await expect((await openBase(store, fetchFn, source)).verifyRemote()).rejects.toThrow(/block 5, read before, has other content now/);
    state.file = iso(2 * MiB, 1);
    await expect((await openBase(store, fetchFn, source)).get(7)).rejects.toThrow(/its size is 2097152 bytes/);
  });
});
