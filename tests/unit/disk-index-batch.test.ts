/**
 * The disk's batched index look-ups (issue 14: the file diff's reads): Disk.readAtCached looks a
 * read's groups up in one transaction, and every written group at once on a point's first read
 * when they are few (PRELOAD_LOOKUPS); Disk.changedBlocks looks groups up LOOKUP_BATCH at a time.
 * Here a disk with hundreds of written groups and points on a fork of a fork of a fork, so both
 * ways and several batches run: what each point reads and which blocks differ must match a model.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { ChunkSource } from "../../src/engine/chunk-source.ts";
import { Disk, PRELOAD_LOOKUPS } from "../../src/engine/disk.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import { GROUP_BLOCKS, type MachineRecord, type Point } from "../../src/engine/store-format.ts";
import { ancestry } from "../../src/engine/timeline.ts";
import { makeRepository } from "./repository.ts";

const BLOCK = 4096;
const CHUNK = 64 * 1024;
/** More than one changedBlocks batch (256 groups). */
const GROUPS = 300;
const SIZE = GROUPS * GROUP_BLOCKS * BLOCK;
/** Writes go to the first blocks of each group (one chunk), so reads stay small. */
const SPAN = 16;
const SOURCE = { repo: "http://repo.test/repo/", kind: "image" as const, name: "model" };

const machine = (id: string): MachineRecord => ({ id, name: id, source: SOURCE, created: 0, opened: 0, lastSeq: 0, lastBranch: 0, now: { branch: 0, seq: 0 } });

describe("batched index look-ups", () => {
  it("read every point as written, and list exactly the blocks that differ, with hundreds of groups and deep ancestry", async () => {
    const { image, manifest, fetchFn } = makeRepository(SIZE, CHUNK);
    const store = await LocalStore.open("index-batch");
    await store.putMachine(machine("m"));
    const disk = await Disk.open(store, new ChunkSource(manifest, SOURCE.repo, store, fetchFn), (await store.getMachine("m"))!);
    /** Block → the write's bytes as the disk's current point sees them (absent: the image's). */
    let model = new Map<number, Uint8Array>();
    const points: { point: Point; blocks: Map<number, Uint8Array> }[] = [];
    let serial = 0;
    const write = async (block: number) => {
      const data = new Uint8Array(BLOCK).map((_, i) => ((serial * 31 + i * 7) & 0xff) | 1);
      new DataView(data.buffer).setUint32(0, ++serial); // every write's bytes are its own
      await disk.write(block * BLOCK, data);
      model.set(block, data);
    };
    const mark = async () => {
      const point = await disk.pointNow();
      points.push({ point, blocks: new Map(model) });
      return points.at(-1)!;
    };
    for (let g = 0; g < GROUPS; g++) await write(g * GROUP_BLOCKS + (g % SPAN));
    let from = await mark();
    // Four forks, each from the middle of the branch before: the newest points see 5 segments.
    for (let f = 0; f < 4; f++) {
      for (let i = 0; i < 40; i++) await write(((f * 97 + i * 37) % GROUPS) * GROUP_BLOCKS + ((i + f) % SPAN));
      const middle = await mark();
      for (let i = 0; i < 10; i++) await write(((f * 53 + i * 11) % GROUPS) * GROUP_BLOCKS + ((i * 3 + f) % SPAN));
      await mark();
      await disk.seek(middle.point);
      model = new Map(middle.blocks);
      from = middle;
    }
    for (let i = 0; i < 20; i++) await write(((i * 29) % GROUPS) * GROUP_BLOCKS + (i % SPAN));
    await mark();
    await disk.flush();
    const deepest = Math.max(...points.map((p) => ancestry(new Map(disk.branchList().map((b) => [b.id, b])), p.point).length));
    expect(deepest).toBe(5);
    expect(GROUPS * deepest).toBeGreaterThan(PRELOAD_LOOKUPS); // the deep points look groups up read by read
    expect(GROUPS).toBeLessThanOrEqual(PRELOAD_LOOKUPS); // branch 0's points preload
    expect(from.point.branch).toBeGreaterThan(0);

    const expected = (blocks: Map<number, Uint8Array>, block: number) => blocks.get(block) ?? image.subarray(block * BLOCK, (block + 1) * BLOCK);
    for (const { point, blocks } of points) {
      const versions = new Map<string, Uint32Array | null>();
      // Each group's written span, then runs across four groups, all through one point's map.
      for (let g = 0; g < GROUPS; g++) {
        const bytes = await disk.readAtCached(point, g * GROUP_BLOCKS * BLOCK, SPAN * BLOCK, versions);
        for (let i = 0; i < SPAN; i++) {
          const block = g * GROUP_BLOCKS + i;
          expect(Buffer.from(bytes.subarray(i * BLOCK, (i + 1) * BLOCK)).equals(Buffer.from(expected(blocks, block))), `block ${block} at ${point.branch}:${point.seq}`).toBe(true);
        }
      }
      for (const g of [0, 101, 296]) {
        const first = g * GROUP_BLOCKS;
        const bytes = await disk.readAtCached(point, first * BLOCK, 4 * GROUP_BLOCKS * BLOCK, new Map());
        for (let block = first; block < first + 4 * GROUP_BLOCKS; block++) {
          const at = (block - first) * BLOCK;
          expect(Buffer.from(bytes.subarray(at, at + BLOCK)).equals(Buffer.from(expected(blocks, block))), `block ${block} at ${point.branch}:${point.seq}`).toBe(true);
        }
      }
    }
    // Same write, same entry: a block differs exactly when the two points see different writes.
    for (const [i, j] of [[0, points.length - 1], [1, 3], [2, 7], [4, 5], [6, points.length - 2]] as const) {
      const [a, b] = [points[i]!, points[j]!];
      const all = new Set([...a.blocks.keys(), ...b.blocks.keys()]);
      const differ = [...all].filter((block) => a.blocks.get(block) !== b.blocks.get(block)).sort((x, y) => x - y);
      expect(differ.length).toBeGreaterThan(0);
      expect(await disk.changedBlocks(a.point, b.point)).toEqual(differ);
      expect(await disk.changedBlocks(b.point, a.point)).toEqual(differ);
    }
    disk.close();
    store.close();
  }, 120_000);
});
