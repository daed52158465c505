/**
 * Bringing your own image, below the page: what a file is taken for (image-detect.ts), and an
 * import into the local store (image-import.ts): chunks deduplicated and zero chunks skipped, the
 * disk reads back byte for byte through the engine, and a cancelled or failed import leaves
 * nothing behind. Runs on fake-indexeddb.
 */
import "fake-indexeddb/auto";
import { gzipSync } from "node:zlib";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ChunkSource, loadManifest, RepositoryError } from "../../src/engine/chunk-source.ts";
import { Disk } from "../../src/engine/disk.ts";
import { detectImage, NotAnImageError } from "../../src/engine/image-detect.ts";
import { forgetOwnImage, ImportCancelled, importImage, type ImageFile } from "../../src/engine/image-import.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import { LOCAL_REPO, type MachineRecord } from "../../src/engine/store-format.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const settings = { bootDevice: "hda" as const, memoryBytes: 64 * MiB, vgaMemoryBytes: 8 * MiB };

function iso(size: number, volumeBlocks = size / 2048): Uint8Array {
  const b = new Uint8Array(size);
  b[0x8000] = 1;
  b.set(new TextEncoder().encode("CD001"), 0x8001);
  b.set(new TextEncoder().encode("MY_CD".padEnd(32)), 0x8028);
  new DataView(b.buffer).setUint32(0x8050, volumeBlocks, true);
  new DataView(b.buffer).setUint16(0x8080, 2048, true);
  return b;
}

function mbrDisk(size: number): Uint8Array {
  const b = new Uint8Array(size);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

const fileOf = (name: string, bytes: Uint8Array): ImageFile => ({
  name,
  size: bytes.byteLength,
  read: async (offset, length) => bytes.slice(offset, offset + length),
});

async function chunkCount(store: LocalStore): Promise<number> {
  const db = (store as unknown as { db: { count(s: string): Promise<number> } }).db;
  return db.count("chunks");
}

describe("image detection", () => {
  it("tells CDs, floppies and hard disks apart", () => {
    expect(detectImage("a.iso", 4 * MiB, iso(64 * KiB, 2048)).bootDevice).toBe("cdrom");
    expect(detectImage("a.iso", 4 * MiB, iso(64 * KiB, 2048)).label).toContain("MY_CD");
    expect(detectImage("f.img", 1474560, mbrDisk(36 * KiB)).bootDevice).toBe("fda");
    expect(detectImage("d.img", 64 * MiB, mbrDisk(36 * KiB))).toMatchObject({ bootDevice: "hda", label: expect.stringContaining("MBR") });
  });

  it("refuses what is not an image, saying what it is", () => {
    const png = new Uint8Array(1024);
    png.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(() => detectImage("cat.png", 1024, png)).toThrow(/PNG picture/);
    expect(() => detectImage("empty.img", 0, new Uint8Array(0))).toThrow(/empty/);
    expect(() => detectImage("cut.iso", 2 * MiB, iso(64 * KiB, 2048))).toThrow(/cut short: the CD is 4\.0 MiB, the file only 2\.0 MiB/);
    expect(() => detectImage("odd.img", 64 * MiB + 3, mbrDisk(36 * KiB))).toThrow(/not a whole number of 512-byte sectors/);
    expect(() => detectImage("data.img", 64 * MiB, new Uint8Array(36 * KiB))).toThrow(/no boot sector/);
    const qcow = new Uint8Array(1024);
    qcow.set([0x51, 0x46, 0x49, 0xfb]);
    expect(() => detectImage("vm.qcow2", 1024, qcow)).toThrow(NotAnImageError);
  });
});

describe("image import", () => {
  it("stores distinct non-zero chunks once and reads back byte for byte through the disk", async () => {
    const store = await LocalStore.open("own-import");
    const image = mbrDisk(3 * MiB);
    // Two equal 64 KiB chunks, one other, the rest zeros.
    image.fill(7, 64 * KiB, 128 * KiB);
    image.fill(7, 256 * KiB, 320 * KiB);
    image.fill(9, 2 * MiB, 2 * MiB + 100);
    const before = await chunkCount(store);
    const progress: number[] = [];
    const { source, manifest } = await importImage(store, fileOf("My Disk.img", image), settings, {
      onProgress: (p) => progress.push(p.doneBytes),
    });
    expect(source).toMatchObject({ repo: LOCAL_REPO, kind: "image" });
    expect(source.name).toMatch(/^my-disk-[0-9a-f]{8}$/);
    expect(manifest.chunks.filter((c) => c === null).length).toBe(manifest.chunks.length - 4);
    expect((await chunkCount(store)) - before).toBe(3); // boot sector, the 7s (twice), the 9s
    expect(progress.at(-1)).toBe(image.byteLength);
    expect(manifest.hardware?.bootDevice).toBe("hda");

    const loaded = await loadManifest(store, source, () => Promise.reject(new Error("no network")));
    const record: MachineRecord = { id: "m", name: "m", source, created: 0, opened: 0, lastSeq: 0, lastBranch: 0, now: { branch: 0, seq: 0 } };
    await store.putMachine(record);
    const disk = await Disk.open(store, new ChunkSource(loaded, LOCAL_REPO, store, () => Promise.reject(new Error("no network"))), record);
    expect(Buffer.from(await disk.read(0, image.byteLength)).equals(Buffer.from(image))).toBe(true);

    // The same file again is the same image: nothing new stored.
    const again = await importImage(store, fileOf("My Disk.img", image), settings);
    expect(again.source.name).toBe(source.name);
    expect((await chunkCount(store)) - before).toBe(3);

    // Discarding the last machine of the image takes its data out.
    await store.deleteMachine("m");
    await forgetOwnImage(store, source);
    expect(await chunkCount(store)).toBe(before);
    await expect(loadManifest(store, source, () => Promise.reject(new Error("no network")))).rejects.toThrow(RepositoryError);
  });

  it("a second disk follows the image, zero-padded to a whole chunk, as a drive of its own", async () => {
    const store = await LocalStore.open("own-import-second-disk");
    const image = iso(100 * KiB + 2048 * 3); // not a whole number of 64 KiB chunks
    image.fill(5, 64 * KiB);
    const { source, manifest } = await importImage(store, fileOf("live.iso", image), { ...settings, bootDevice: "cdrom", secondDiskBytes: 4 * MiB });
    expect(source.name).toMatch(/^live-[0-9a-f]{8}-hd4m$/);
    expect(manifest.size).toBe(128 * KiB + 4 * MiB);
    expect(manifest.hardware?.drives).toEqual([
      { device: "cdrom", at: 0, bytes: image.byteLength },
      { device: "hda", at: 128 * KiB, bytes: 4 * MiB },
    ]);
    expect(manifest.chunks.slice(2).every((c) => c === null)).toBe(true);
    const record: MachineRecord = { id: "m2", name: "m2", source, created: 0, opened: 0, lastSeq: 0, lastBranch: 0, now: { branch: 0, seq: 0 } };
    const disk = await Disk.open(store, new ChunkSource(manifest, LOCAL_REPO, store, () => Promise.reject(new Error("no network"))), record);
    const padded = new Uint8Array(128 * KiB);
    padded.set(image);
    expect(Buffer.from(await disk.read(0, 128 * KiB)).equals(Buffer.from(padded))).toBe(true);
    expect((await disk.read(128 * KiB, 4 * MiB)).every((b) => b === 0)).toBe(true);
  });

  it("a gzip-compressed image is inflated on the way; a cut-short one is refused and stores nothing", async () => {
    const store = await LocalStore.open("own-gzip");
    const image = iso(12 * MiB);
    image.fill(3, 9 * MiB, 9 * MiB + 5000);
    const packed = gzipSync(image);
    const { manifest, detected } = await importImage(store, fileOf("live.iso.gz", packed), settings);
    expect(detected).toMatchObject({ bootDevice: "cdrom", label: expect.stringContaining("gzip-compressed") });
    expect(manifest.size).toBe(image.byteLength);
    const record: MachineRecord = { id: "g", name: "g", source: { repo: LOCAL_REPO, kind: "image", name: manifest.name }, created: 0, opened: 0, lastSeq: 0, lastBranch: 0, now: { branch: 0, seq: 0 } };
    const disk = await Disk.open(store, new ChunkSource(manifest, LOCAL_REPO, store, () => Promise.reject(new Error("no network"))), record);
    expect(Buffer.from(await disk.read(0, image.byteLength)).equals(Buffer.from(image))).toBe(true);

    const other = await LocalStore.open("own-gzip-cut");
    const cut = packed.slice(0, packed.byteLength - 100);
    cut.set(packed.subarray(packed.byteLength - 4), cut.byteLength - 4); // a trailer that still reads as a size
    await expect(importImage(other, fileOf("cut.iso.gz", cut), settings)).rejects.toThrow(/damaged or cut short/);
    expect(await chunkCount(other)).toBe(0);
  });

  it("an xz-compressed image is inflated on the way, its size from the xz index; a cut-short one is refused", async () => {
    const store = await LocalStore.open("own-import-xz");
    const image = iso(4 * MiB);
    for (let i = 0; i < image.length; i += 4096) image[i + 100] = i % 251;
    // Several xz blocks, so the index lists more than one.
    const packed = new Uint8Array(execFileSync("xz", ["-c", "-T2", "--block-size=1MiB"], { input: image }));
    const { manifest, detected } = await importImage(store, fileOf("live.iso.xz", packed), settings);
    expect(detected.label).toContain("xz-compressed");
    expect(manifest.size).toBe(image.byteLength);
    expect(manifest.sha256).toBe(createHash("sha256").update(image).digest("hex"));
    const before = await chunkCount(store);
    await expect(importImage(store, fileOf("cut.iso.xz", packed.subarray(0, packed.length - 1000)), settings)).rejects.toThrow(/xz-compressed, but the data is damaged/);
    expect(await chunkCount(store)).toBe(before);
  });

  it("a cancelled import leaves nothing in storage", async () => {
    const store = await LocalStore.open("own-cancel");
    const image = new Uint8Array(24 * MiB).map((_, i) => (i * 31) & 0xff);
    image.set([0x55, 0xaa], 510);
    const control = new AbortController();
    const run = importImage(store, fileOf("big.img", image), settings, {
      signal: control.signal,
      onProgress: (p) => p.doneBytes >= 8 * MiB && control.abort(),
    });
    await expect(run).rejects.toThrow(ImportCancelled);
    expect(await chunkCount(store)).toBe(0);
    expect(await store.listManifests(LOCAL_REPO)).toEqual([]);
  });

  it("a file that is not an image stores nothing", async () => {
    const store = await LocalStore.open("own-refused");
    await expect(importImage(store, fileOf("notes.txt", new TextEncoder().encode("hello")), settings)).rejects.toThrow(NotAnImageError);
    expect(await chunkCount(store)).toBe(0);
  });
});
