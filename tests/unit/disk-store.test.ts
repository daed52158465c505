/**
 * How the disk engine lays writes out in IndexedDB (store-format.ts): long writes split across
 * data records, and stores written by version 2 (one record per block version) migrated on open.
 * Runs on fake-indexeddb; disk-model.test.ts checks random histories against a model.
 */
import "fake-indexeddb/auto";
import { openDB } from "idb";
import { describe, expect, it } from "vitest";
import { ChunkSource } from "../../src/engine/chunk-source.ts";
import { Disk } from "../../src/engine/disk.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import { DATA_RECORD_BLOCKS, GROUP_BLOCKS, type MachineRecord } from "../../src/engine/store-format.ts";
import { makeRepository } from "./repository.ts";

const BLOCK = 4096;
const CHUNK = 16 * 1024;
const SIZE = 12 * GROUP_BLOCKS * BLOCK;
const SOURCE = { repo: "http://repo.test/repo/", kind: "image" as const, name: "model" };

function machine(id: string, now = { branch: 0, seq: 0 }, lastSeq = 0, lastBranch = 0): MachineRecord {
  return { id, name: id, source: SOURCE, created: 0, opened: 0, lastSeq, lastBranch, now };
}

const pattern = (blocks: number, seed: number) => new Uint8Array(blocks * BLOCK).map((_, i) => (seed + i * 13 + (i >> 12)) & 0xff || 1);
const equal = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

async function openDisk(dbName: string, id: string) {
  const { image, manifest, fetchFn } = makeRepository(SIZE, CHUNK);
  const store = await LocalStore.open(dbName);
  const record = (await store.getMachine(id))!;
  const disk = await Disk.open(store, new ChunkSource(manifest, SOURCE.repo, store, fetchFn), record);
  return { image, store, disk };
}

describe("disk store layout", () => {
  it("a write longer than a data record reads back whole after reopening", async () => {
    const store = await LocalStore.open("long-write");
    await store.putMachine(machine("m"));
    store.close();
    let { disk, store: s } = await openDisk("long-write", "m");
    const blocks = 2 * DATA_RECORD_BLOCKS + 3; // three data records from one write
    const data = pattern(blocks, 7);
    data.fill(0, 5 * BLOCK, 9 * BLOCK); // zero blocks in the middle store no data
    await disk.write(BLOCK, data);
    await disk.write(0, pattern(1, 99)); // a second write joins the last record
    await disk.flush();
    disk.close();
    s.close();
    ({ disk, store: s } = await openDisk("long-write", "m"));
    expect(equal(await disk.read(BLOCK, data.byteLength), data)).toBe(true);
    expect(equal(await disk.read(0, BLOCK), pattern(1, 99))).toBe(true);
    disk.close();
    s.close();
  });

  it("migrates a version 2 store: every point reads as before", async () => {
    const name = "from-v2";
    // Version 2's layout, written directly: `blocks` keyed [machine, block, branch, seq] holds each
    // block version's 4 KiB, or an empty array for zeros.
    const A = pattern(2, 1);
    const B = pattern(1, 2);
    const C = pattern(1, 3);
    const v2 = await openDB(name, 2, {
      upgrade(db) {
        for (const s of ["chunks", "manifests", "machines", "branches", "log", "blocks", "markers", "checkpoints", "statePieces"]) db.createObjectStore(s);
      },
    });
    const far = GROUP_BLOCKS + 6; // in the second group
    await v2.put("machines", machine("m", { branch: 1, seq: 4 }, 4, 1), "m");
    await v2.put("branches", { machine: "m", id: 0, parent: null, forkSeq: 0, head: 3, created: 0 }, ["m", 0]);
    await v2.put("branches", { machine: "m", id: 1, parent: 0, forkSeq: 1, head: 4, created: 0 }, ["m", 1]);
    const log = (seq: number, branch: number, firstBlock: number, blockCount: number) => ({
      machine: "m", seq, branch, time: seq, offset: firstBlock * BLOCK, length: blockCount * BLOCK, firstBlock, blockCount,
    });
    await v2.put("log", log(1, 0, 0, 2), ["m", 1]);
    await v2.put("log", log(2, 0, 1, 1), ["m", 2]);
    await v2.put("log", log(3, 0, far, 1), ["m", 3]);
    await v2.put("log", log(4, 1, 0, 1), ["m", 4]);
    await v2.put("blocks", A.slice(0, BLOCK), ["m", 0, 0, 1]); // seq 1: blocks 0–1 = A
    await v2.put("blocks", A.slice(BLOCK), ["m", 1, 0, 1]);
    await v2.put("blocks", new Uint8Array(0), ["m", 1, 0, 2]); // seq 2: block 1 zeroed
    await v2.put("blocks", B, ["m", far, 0, 3]); // seq 3: a block in the second group
    await v2.put("blocks", C, ["m", 0, 1, 4]); // seq 4, branch 1 (forked after seq 1): block 0 = C
    v2.close();

    const { disk, store, image } = await openDisk(name, "m");
    const db = await openDB(name);
    expect([...db.objectStoreNames]).not.toContain("blocks");
    db.close();
    const at = async (block: number) => disk.read(block * BLOCK, BLOCK);
    const base = (block: number) => image.slice(block * BLOCK, (block + 1) * BLOCK);
    // Branch 1 now: its own block 0, block 1 as of the fork (seq 1), the far block untouched.
    expect(equal(await at(0), C)).toBe(true);
    expect(equal(await at(1), A.slice(BLOCK))).toBe(true);
    expect(equal(await at(far), base(far))).toBe(true);
    await disk.seek({ branch: 0, seq: 3 });
    expect(equal(await at(0), A.slice(0, BLOCK))).toBe(true);
    expect(equal(await at(1), new Uint8Array(BLOCK))).toBe(true);
    expect(equal(await at(far), B)).toBe(true);
    await disk.seek({ branch: 0, seq: 1 });
    expect(equal(await at(1), A.slice(BLOCK))).toBe(true);
    expect(equal(await at(far), base(far))).toBe(true);
    // And the migrated machine goes on: a write after the rewind forks a branch.
    await disk.write(2 * BLOCK, B);
    expect(disk.now.branch).toBe(2);
    expect(equal(await at(2), B)).toBe(true);
    disk.close();
    store.close();
  });
});
