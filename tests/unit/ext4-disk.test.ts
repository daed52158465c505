/**
 * The file diff on a real Disk (fake-indexeddb): Disk.changedBlocks against a byte comparison of
 * the two points, over random writes on several branches; and diffPoints between points of a
 * disk whose base image is a host ext4 image and whose writes are what debugfs changed.
 */
import "fake-indexeddb/auto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { ChunkSource } from "../../src/engine/chunk-source.ts";
import { Disk } from "../../src/engine/disk.ts";
import { diffPoints, listDirectory, openFiles, pointDevice, readFile } from "../../src/engine/ext4/files.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import type { DiskManifest } from "../../src/engine/repo-format.ts";
import { BLOCK_SIZE, GROUP_BLOCKS, type MachineRecord, type Point } from "../../src/engine/store-format.ts";
import { debugfs, mke2fs, pattern, scratch } from "./ext4-tools.ts";
import { makeRepository, repositoryOf } from "./repository.ts";

const work = scratch();
afterAll(() => work.cleanup());
let dbCounter = 0;

async function openDisk(manifest: DiskManifest, fetchFn: (url: string) => Promise<Response>) {
  const store = await LocalStore.open(`ext4-disk-${++dbCounter}`);
  const machine: MachineRecord = {
    id: "m1",
    name: "ext4",
    source: { repo: "http://repo.test/repo/", kind: "image", name: "ext4" },
    created: 0,
    opened: 0,
    lastSeq: 0,
    lastBranch: 0,
    now: { branch: 0, seq: 0 },
  };
  await store.putMachine(machine);
  const disk = await Disk.open(store, new ChunkSource(manifest, machine.source.repo, store, fetchFn), machine);
  return { disk, store };
}

/** Writes the 4 KiB blocks where `next` differs from `current` (what a guest's writes would be). */
async function writeDifferences(disk: Disk, current: Uint8Array, next: Uint8Array): Promise<void> {
  for (let at = 0; at < next.byteLength; at += BLOCK_SIZE) {
    const block = next.subarray(at, at + BLOCK_SIZE);
    if (!Buffer.from(block).equals(Buffer.from(current.subarray(at, at + BLOCK_SIZE)))) await disk.write(at, block);
  }
}

describe("Disk.changedBlocks", () => {
  it("lists exactly the blocks whose bytes differ between any two points, across branches", async () => {
    const SIZE = 6 * GROUP_BLOCKS * BLOCK_SIZE;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            { weight: 4, arbitrary: fc.record({ op: fc.constant("write" as const), block: fc.nat(SIZE / BLOCK_SIZE - 1), blocks: fc.integer({ min: 1, max: 40 }) }) },
            { weight: 1, arbitrary: fc.record({ op: fc.constant("seek" as const), pick: fc.nat() }) },
          ),
          { minLength: 1, maxLength: 40 },
        ),
        fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 1, maxLength: 8 }),
        async (commands, pairs) => {
          const { image, manifest, fetchFn } = makeRepository(SIZE, 16 * 1024);
          const { disk, store } = await openDisk(manifest, fetchFn);
          let current = image.slice();
          const points: { point: Point; content: Uint8Array }[] = [{ point: disk.now, content: current.slice() }];
          let unique = 0;
          for (const c of commands) {
            if (c.op === "write") {
              const count = Math.min(c.blocks, SIZE / BLOCK_SIZE - c.block);
              // Content no other write has (so different entries always mean different bytes): each
              // block starts with its own serial number (a pattern alone repeats every 251 bytes,
              // and two writes' blocks could then be byte for byte the same).
              const data = new Uint8Array(count * BLOCK_SIZE).map((_, i) => ((i * 7) % 251) + 1);
              const serials = new DataView(data.buffer);
              for (let k = 0; k < count; k++) serials.setUint32(k * BLOCK_SIZE, ++unique);
              await disk.write(c.block * BLOCK_SIZE, data);
              current.set(data, c.block * BLOCK_SIZE);
              points.push({ point: disk.now, content: current.slice() });
            } else {
              const target = points[c.pick % points.length]!;
              await disk.seek(target.point);
              current = target.content.slice();
            }
          }
          for (const [i, j] of pairs) {
            const a = points[i % points.length]!;
            const b = points[j % points.length]!;
            const expected: number[] = [];
            for (let block = 0; block < SIZE / BLOCK_SIZE; block++) {
              const at = block * BLOCK_SIZE;
              if (!Buffer.from(a.content.subarray(at, at + BLOCK_SIZE)).equals(Buffer.from(b.content.subarray(at, at + BLOCK_SIZE)))) expected.push(block);
            }
            expect(await disk.changedBlocks(a.point, b.point)).toEqual(expected);
          }
          disk.close();
          store.close();
        },
      ),
      { numRuns: 25 },
    );
  }, 120_000);
});

describe("diffPoints on a machine's disk", () => {
  it("names what changed between points on two branches, and reads files at each", async () => {
    const base = join(work.dir, "base.img");
    mke2fs(base, 16, ["-t", "ext4", "-b", "4096"]);
    debugfs(base, ["mkdir /etc", "mkdir /home"]);
    writeFileSync(join(work.dir, "fstab"), "/dev/sda2 / ext4 rw 0 1\n");
    debugfs(base, ["cd /etc", `write ${join(work.dir, "fstab")} fstab`]);
    const image = new Uint8Array(readFileSync(base));
    const { manifest, fetchFn } = repositoryOf(image, 64 * 1024, "ext4", "ext4 test image");
    const { disk, store } = await openDisk(manifest, fetchFn);
    const p0 = disk.now;

    // Branch 0: edit fstab in place (zap) and add a file.
    const one = join(work.dir, "one.img");
    copyFileSync(base, one);
    writeFileSync(join(work.dir, "notes"), pattern(5000, 3));
    debugfs(one, ["zap_block -f /etc/fstab -o 0 -l 4 -p 0x41 0", "cd /home", `write ${join(work.dir, "notes")} notes`]);
    const oneBytes = new Uint8Array(readFileSync(one));
    await writeDifferences(disk, image, oneBytes);
    const p1 = disk.now;

    // Back to the start, and another future: remove fstab, chmod /home.
    await disk.seek(p0);
    const two = join(work.dir, "two.img");
    copyFileSync(base, two);
    debugfs(two, ["rm /etc/fstab", "sif /home mode 040700"]);
    const twoBytes = new Uint8Array(readFileSync(two));
    await writeDifferences(disk, image, twoBytes);
    const p2 = disk.now;
    expect(p2.branch).not.toBe(p1.branch);

    const show = (d: Awaited<ReturnType<typeof diffPoints>>) => d.changes.map((c) => `${c.change} ${c.path} ${c.what.join(",")}`);
    expect(show(await diffPoints(disk, p0, p1))).toEqual(["modified /etc/fstab content", "added /home/notes "]);
    expect(show(await diffPoints(disk, p1, p2))).toEqual(["removed /etc/fstab ", "modified /home mode", "removed /home/notes "]);
    expect(show(await diffPoints(disk, p2, p0))).toEqual(["added /etc/fstab ", "modified /home mode"]);

    const at1 = await openFiles(pointDevice(disk, p1));
    expect(at1.volume).toMatchObject({ number: 0, table: "disk" });
    expect(Buffer.from(await readFile(at1.fs, "/home/notes")).equals(pattern(5000, 3))).toBe(true);
    expect(new TextDecoder().decode(await readFile(at1.fs, "/etc/fstab"))).toBe("AAAA/sda2 / ext4 rw 0 1\n");
    const at0 = await openFiles(pointDevice(disk, p0));
    expect(new TextDecoder().decode(await readFile(at0.fs, "/etc/fstab"))).toBe("/dev/sda2 / ext4 rw 0 1\n");
    expect((await listDirectory(at0.fs, "/")).map((s) => s.path)).toEqual(["/etc", "/home", "/lost+found"]);
    disk.close();
    store.close();
  }, 60_000);
});
