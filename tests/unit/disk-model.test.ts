/**
 * Engine property test: random writes, markers, rewinds, branches and reopenings against a
 * reference model that keeps a full copy of the disk at every point. Reading any range at any
 * point must equal the model. Runs on fake-indexeddb in Node; the real browser is covered by e2e.
 */
import "fake-indexeddb/auto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ChunkSource } from "../../src/engine/chunk-source.ts";
import { Disk } from "../../src/engine/disk.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import { GROUP_BLOCKS, type MachineRecord, type Point } from "../../src/engine/store-format.ts";
import { makeRepository } from "./repository.ts";

const CHUNK = 16 * 1024;
/** Five index groups (store-format.ts), so writes cross group boundaries; long writes fill more than one data record. */
const SIZE = 5 * GROUP_BLOCKS * 4096;
const SECTOR = 512;

type Command =
  | { op: "write"; sector: number; sectors: number; fill: number; zeros: boolean }
  | { op: "read"; sector: number; sectors: number }
  | { op: "mark" }
  | { op: "seek"; pick: number }
  | { op: "reopen" };

const sectors = SIZE / SECTOR;
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant("write" as const), sector: fc.nat(sectors - 1), sectors: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 2560 })), fill: fc.nat(255), zeros: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("read" as const), sector: fc.nat(sectors - 1), sectors: fc.integer({ min: 1, max: 64 }) }) },
  { weight: 1, arbitrary: fc.constant({ op: "mark" as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("seek" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ op: "reopen" as const }) },
);

let dbCounter = 0;

describe("disk engine against a reference model", () => {
  it("reads at every point equal the model, across rewinds, branches and reopenings", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 60 }), async (commands) => {
        const { image, manifest, fetchFn } = makeRepository(SIZE, CHUNK);
        const dbName = `model-${++dbCounter}`;
        let store = await LocalStore.open(dbName);
        const machine: MachineRecord = {
          id: "m1",
          name: "model",
          source: { repo: "http://repo.test/repo/", kind: "image", name: "model" },
          created: 0,
          opened: 0,
          lastSeq: 0,
          lastBranch: 0,
          now: { branch: 0, seq: 0 },
        };
        await store.putMachine(machine);
        const open = async () => Disk.open(store, new ChunkSource(manifest, machine.source.repo, store, fetchFn), (await store.getMachine("m1"))!);
        let disk = await open();
        // The model: full disk content at every point reached so far.
        let current = image.slice();
        const points: { point: Point; content: Uint8Array }[] = [{ point: disk.now, content: current.slice() }];

        for (const c of commands) {
          if (c.op === "write") {
            const length = Math.min(c.sectors, sectors - c.sector) * SECTOR;
            // Zeros too: the store keeps only an entry for a block of zeros. Long writes fill
            // and split 1 MiB data records.
            const data = c.zeros ? new Uint8Array(length) : new Uint8Array(length).map((_, i) => (c.fill + i * 31) & 0xff);
            await disk.write(c.sector * SECTOR, data);
            current.set(data, c.sector * SECTOR);
            points.push({ point: disk.now, content: current.slice() });
          } else if (c.op === "read") {
            const length = Math.min(c.sectors, sectors - c.sector) * SECTOR;
            const got = await disk.read(c.sector * SECTOR, length);
            expect(Buffer.from(got).equals(Buffer.from(current.subarray(c.sector * SECTOR, c.sector * SECTOR + length)))).toBe(true);
          } else if (c.op === "mark") {
            const marker = await disk.mark("bookmark", "b");
            expect(marker.seq).toBe(disk.now.seq);
          } else if (c.op === "seek") {
            const target = points[c.pick % points.length]!;
            await disk.seek(target.point);
            current = target.content.slice();
          } else {
            const before = disk.now;
            await disk.flush();
            disk.close();
            store.close();
            store = await LocalStore.open(dbName);
            disk = await open();
            expect(disk.now).toEqual(before);
          }
        }
        // Finally every point ever reached reads back exactly, whole disk.
        await disk.flush();
        for (const { point, content } of points) {
          await disk.seek(point);
          const got = await disk.read(0, SIZE);
          expect(Buffer.from(got).equals(Buffer.from(content))).toBe(true);
        }
        disk.close();
        store.close();
      }),
      { numRuns: 60 },
    );
  }, 120_000);
});
