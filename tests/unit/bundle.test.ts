/** Bundle files round-trip (one point, version 1; several, version 2), and damaged ones are refused with a clear message. */
import "fake-indexeddb/auto";
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { BUNDLE_POINTS_VERSION, bundleDisk, bundlePoints, changedChunkRanges, decodeBundle, decodeBundlePoints, encodeBundle, encodePoints } from "../../src/engine/bundle.ts";
import { ChunkSource } from "../../src/engine/chunk-source.ts";
import { Disk } from "../../src/engine/disk.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import { LEGACY_HARDWARE, chunkHash, newSnapshotId, type DiskManifest } from "../../src/engine/repo-format.ts";
import { storeForm } from "../../src/engine/snapshot.ts";
import type { MachineRecord } from "../../src/engine/store-format.ts";
import { makeRepository } from "./repository.ts";

async function sample() {
  const disk = new Uint8Array(65536).fill(7);
  const state = new TextEncoder().encode("machine state ".repeat(1000));
  const a = await storeForm(disk);
  const b = await storeForm(state);
  const manifest: DiskManifest = {
    format: "sandglass-disk",
    version: 1,
    kind: "snapshot",
    name: newSnapshotId(),
    description: "test",
    created: new Date().toISOString(),
    size: 131072,
    chunkSize: 65536,
    chunks: [a.ref, null],
    storedBytes: 0,
    parent: { kind: "image", name: "default" },
    machine: { pieces: [b.ref], stateBytes: state.byteLength, memoryBytes: 64 << 20 },
  };
  const files = new Map([
    [a.ref, a.stored],
    [b.ref, b.stored],
  ]);
  return { manifest, files, disk, state };
}

const sha = (d: Uint8Array) => createHash("sha256").update(d).digest("hex");

describe("bundle", () => {
  it("round-trips a snapshot and its files", async () => {
    const { manifest, files, disk, state } = await sample();
    const { manifest: back, contents } = await decodeBundle(encodeBundle(manifest, files));
    expect(back).toEqual(manifest);
    expect(contents.get(sha(disk))).toEqual(disk);
    expect(contents.get(sha(state))).toEqual(state);
  });

  it("refuses a truncated file, a flipped byte and a foreign file", async () => {
    const { manifest, files } = await sample();
    const bytes = encodeBundle(manifest, files);
    await expect(decodeBundle(bytes.subarray(0, bytes.length - 10))).rejects.toThrow(/truncated/);
    // A flipped byte inside a file's stored bytes (not in gzip's trailer, which holds no content).
    const headerLength = new DataView(bytes.buffer, bytes.byteOffset).getUint32(20, true);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(24, 24 + headerLength))) as {
      files: { offset: number; length: number }[];
    };
    for (const file of header.files) {
      const flipped = bytes.slice();
      flipped[24 + headerLength + file.offset + Math.floor(file.length / 2)]! ^= 0xff;
      await expect(decodeBundle(flipped)).rejects.toThrow(/damaged|does not match/);
    }
    await expect(decodeBundle(new TextEncoder().encode("PK\x03\x04 not ours at all......"))).rejects.toThrow(/not a usable/);
  });

  it("refuses a bundle missing a file its manifest needs", async () => {
    const { manifest, files } = await sample();
    const [first] = files.keys();
    files.delete(first!);
    await expect(decodeBundle(encodeBundle(manifest, files))).rejects.toThrow(/missing/);
  });
});

describe("bundle version 2 (several points)", () => {
  async function twoPoints() {
    const { manifest, files, disk } = await sample();
    const changed = await storeForm(new Uint8Array(65536).fill(9));
    const second: DiskManifest = { ...manifest, name: newSnapshotId(), chunks: [manifest.chunks[0]!, changed.ref] };
    files.set(changed.ref, changed.stored);
    const points = [
      { label: { name: "first", time: 1000, branch: 0, seq: 3, checkpoint: "c-1" }, manifest },
      { label: { name: "second", time: 2000, branch: 1, seq: 9 }, manifest: second },
    ];
    return { points, files, disk, changed };
  }

  it("round-trips points that share files, each stored once, and reads each point's disk", async () => {
    const { points, files, disk } = await twoPoints();
    const bytes = encodePoints(points, files);
    expect(new DataView(bytes.buffer).getUint32(16, true)).toBe(BUNDLE_POINTS_VERSION);
    const back = await decodeBundlePoints(bytes);
    expect(back.points).toEqual(points);
    expect(back.contents.size).toBe(3);
    // importBundle's call: the first point, or the one asked for.
    expect((await decodeBundle(bytes)).manifest).toEqual(points[0]!.manifest);
    expect((await decodeBundle(bytes, 1)).manifest).toEqual(points[1]!.manifest);
    await expect(decodeBundle(bytes, 2)).rejects.toThrow(/no point 2/);
    const first = await bundleDisk(back.points[0]!.manifest, back.contents).read(0, 131072);
    expect(Buffer.from(first.subarray(0, 65536)).equals(Buffer.from(disk))).toBe(true);
    expect(first.subarray(65536).every((b) => b === 0)).toBe(true);
    const second = await bundleDisk(back.points[1]!.manifest, back.contents).read(61440, 8192);
    expect([...new Set(second.subarray(0, 4096))]).toEqual([7]);
    expect([...new Set(second.subarray(4096))]).toEqual([9]);
    expect(changedChunkRanges(points[0]!.manifest, points[1]!.manifest)).toEqual([{ offset: 65536, length: 65536 }]);
  });

  it("reads a version 1 file as one point, labelled from its manifest", async () => {
    const { manifest, files } = await sample();
    const back = await decodeBundlePoints(encodeBundle(manifest, files));
    expect(back.points).toEqual([{ label: { time: Date.parse(manifest.created), name: "test" }, manifest }]);
  });

  it("refuses a file missing what its second point needs, or with no points", async () => {
    const { points, files, changed } = await twoPoints();
    files.delete(changed.ref);
    await expect(decodeBundlePoints(encodePoints(points, files))).rejects.toThrow(/1 of the files it needs are missing/);
    expect(() => encodePoints([], files)).toThrow(/at least one point/);
  });

  it("bundles several checkpoints of a machine's disk, sharing the base image's chunks", async () => {
    const SIZE = 8 * 65536;
    const { image, manifest, fetchFn } = makeRepository(SIZE, 65536);
    const store = await LocalStore.open("bundle-points");
    const machine: MachineRecord = {
      id: "m1",
      name: "m",
      source: { repo: "http://repo.test/repo/", kind: "image", name: "model" },
      created: 0,
      opened: 0,
      lastSeq: 0,
      lastBranch: 0,
      now: { branch: 0, seq: 0 },
    };
    await store.putMachine(machine);
    const base = new ChunkSource(manifest, machine.source.repo, store, fetchFn);
    const disk = await Disk.open(store, base, machine);
    await disk.write(0, new Uint8Array(4096).fill(1));
    const p1 = disk.now;
    await disk.write(3 * 65536, new Uint8Array(8192).fill(2));
    const p2 = disk.now;
    const state = new TextEncoder().encode("a machine state ".repeat(500));
    const spec = (point: typeof p1, name: string) => ({ point, state, hardware: LEGACY_HARDWARE, description: name, label: { name, time: 1, ...point } });
    const bytes = await bundlePoints(disk, [spec(p1, "one"), spec(p2, "two")], (ref) => base.getRef(ref, null, "a chunk"));
    const back = await decodeBundlePoints(bytes);
    expect(back.points.map((p) => p.label.name)).toEqual(["one", "two"]);
    for (const [i, point] of [p1, p2].entries()) {
      const [got, want] = [await bundleDisk(back.points[i]!.manifest, back.contents).read(0, SIZE), await disk.readAt(point, 0, SIZE)];
      expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
    }
    // The chunks both points take from the image are in the file once.
    const refs = back.points.flatMap((p) => p.manifest.chunks.filter((c): c is string => c !== null).map(chunkHash));
    expect(back.contents.size).toBe(new Set(refs).size + 1);
    expect(image.byteLength).toBe(SIZE);
    disk.close();
    store.close();
  });
});
