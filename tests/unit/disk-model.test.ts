/**
 * Engine property test: random writes, markers, rewinds, branches and reopenings against a
 * reference model that keeps a full copy of the disk at every point. Reading any range at any
 * point must equal the model. Runs on fake-indexeddb in Node; the real browser is covered by e2e.
 */
import "fake-indexeddb/auto";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ChunkSource } from "../../src/engine/chunk-source.ts";
import { Disk } from "../../src/engine/disk.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import type { DiskManifest } from "../../src/engine/repo-format.ts";
import type { MachineRecord, Point } from "../../src/engine/store-format.ts";

const CHUNK = 16 * 1024;
const SIZE = 8 * CHUNK;
const SECTOR = 512;

/** A base image with recognisable content, a zero chunk, and an in-memory "repository". */
function makeRepository() {
  const image = new Uint8Array(SIZE);
  for (let i = 0; i < SIZE; i++) image[i] = (i * 7 + (i >> 9)) & 0xff;
  image.fill(0, 3 * CHUNK, 4 * CHUNK);
  const files = new Map<string, Uint8Array>();
  const chunks: (string | null)[] = [];
  for (let c = 0; c < SIZE / CHUNK; c++) {
    const data = image.slice(c * CHUNK, (c + 1) * CHUNK);
    if (data.every((b) => b === 0)) {
      chunks.push(null);
      continue;
    }
    const hash = createHash("sha256").update(data).digest("hex");
    files.set(`chunks/${hash}`, data);
    chunks.push(hash);
  }
  const manifest = {
    format: "sandglass-disk",
    version: 1,
    kind: "image",
    name: "model",
    description: "property test image",
    created: "2026-01-01T00:00:00.000Z",
    size: SIZE,
    chunkSize: CHUNK,
    chunks,
    sha256: createHash("sha256").update(image).digest("hex"),
    storedBytes: [...files.values()].reduce((n, f) => n + f.byteLength, 0),
  } as unknown as DiskManifest;
  const fetchFn = async (url: string) => {
    const path = new URL(url).pathname.replace(/^\/repo\//, "");
    const body = files.get(path);
    return body ? new Response(body as Uint8Array<ArrayBuffer>) : new Response("missing", { status: 404 });
  };
  return { image, manifest, fetchFn };
}

type Command =
  | { op: "write"; sector: number; sectors: number; fill: number; zeros: boolean }
  | { op: "read"; sector: number; sectors: number }
  | { op: "mark" }
  | { op: "seek"; pick: number }
  | { op: "reopen" };

const sectors = SIZE / SECTOR;
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant("write" as const), sector: fc.nat(sectors - 1), sectors: fc.integer({ min: 1, max: 40 }), fill: fc.nat(255), zeros: fc.boolean() }) },
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
        const { image, manifest, fetchFn } = makeRepository();
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
            // Zeros too: the store keeps a block of zeros as an empty record.
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
