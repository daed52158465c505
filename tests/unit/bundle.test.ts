/** Bundle files round-trip, and damaged ones are refused with a clear message. */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { decodeBundle, encodeBundle } from "../../src/engine/bundle.ts";
import { newSnapshotId, type DiskManifest } from "../../src/engine/repo-format.ts";
import { storeForm } from "../../src/engine/snapshot.ts";

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
