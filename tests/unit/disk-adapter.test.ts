/**
 * The v86 disk adapter against a plain byte array: random reads and writes (partial, whole-chunk,
 * spanning chunks) over a backend whose answers arrive late and out of order, with a page cache
 * small enough to evict. Every answer must hold every write issued before it is delivered (a
 * write that overlaps a read still in flight is the guest's race, as on real hardware: the
 * adapter gives the newer bytes).
 */
import { describe, expect, it } from "vitest";
import { V86DiskAdapter, type DiskBackend } from "../../src/vm/disk-adapter.ts";

const CHUNK = 4096;
const SIZE = 64 * CHUNK;

function rng(seed: number) {
  return () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed / 2 ** 32;
  };
}

/** A backend that applies writes in order and answers reads after a random delay. */
function slowBackend(random: () => number) {
  const bytes = new Uint8Array(SIZE);
  for (let i = 0; i < SIZE; i++) bytes[i] = (i * 7) & 0xff;
  let tail = Promise.resolve();
  const backend: DiskBackend = {
    read(offset, length) {
      // Like the worker: a read sees every write issued before it.
      const snapshot = tail.then(() => bytes.slice(offset, offset + length));
      return snapshot.then((data) => new Promise((r) => setTimeout(() => r(data), random() * 4)));
    },
    write(offset, data) {
      tail = tail.then(() => void bytes.set(data, offset));
      return tail;
    },
  };
  return { backend, initial: bytes.slice() };
}

describe("V86DiskAdapter", () => {
  it("answers every read with the bytes written before it, across evictions and late answers", async () => {
    for (const seed of Array.from({ length: 12 }, (_, i) => i + 1)) {
      const random = rng(seed);
      const { backend, initial } = slowBackend(random);
      const model = initial;
      const errors: unknown[] = [];
      const adapter = new V86DiskAdapter(backend, { size: SIZE, chunkSize: CHUNK, cacheBytes: 8 * CHUNK, onError: (e) => errors.push(e) });
      const pending: Promise<void>[] = [];
      let wholeChunkWrites = 0;
      for (let op = 0; op < 600; op++) {
        const roll = random();
        if (roll < 0.45) {
          const start = Math.floor(random() * (SIZE - 3 * CHUNK));
          const len = 1 + Math.floor(random() * 3 * CHUNK);
          pending.push(
            new Promise<void>((resolve, reject) =>
              adapter.get(start, len, (data) => {
                if (Buffer.from(data).equals(Buffer.from(model.subarray(start, start + len)))) resolve();
                else reject(new Error(`read of ${len} at ${start} (op ${op}, seed ${seed}) differs from the model`));
              }),
            ),
          );
        } else {
          // Sector-aligned writes, sometimes covering whole chunks (what dd and the page cache do).
          const whole = roll < 0.7;
          const start = whole ? Math.floor(random() * 60) * CHUNK : Math.floor(random() * (SIZE / 512 - 16)) * 512;
          const len = whole ? CHUNK * (1 + Math.floor(random() * 3)) : 512 * (1 + Math.floor(random() * 15));
          if (whole) wholeChunkWrites++;
          const data = new Uint8Array(len).map(() => Math.floor(random() * 256));
          model.set(data, start);
          adapter.set(start, data, () => undefined);
        }
        if (random() < 0.1) await new Promise((r) => setTimeout(r, random() * 3));
      }
      await Promise.all(pending);
      expect(errors).toEqual([]);
      expect(wholeChunkWrites).toBeGreaterThan(50);
      // Reads of chunks just written whole come from page memory.
      const misses = adapter.counters.misses;
      adapter.set(10 * CHUNK, new Uint8Array(2 * CHUNK).fill(9), () => undefined);
      await new Promise<void>((resolve) =>
        adapter.get(10 * CHUNK, 2 * CHUNK, (data) => {
          expect(data.every((b) => b === 9)).toBe(true);
          resolve();
        }),
      );
      expect(adapter.counters.misses).toBe(misses);
    }
  });

  it("says when v86 has no read waiting, in the task of the last answer, before anything else runs", async () => {
    let answer!: (data: Uint8Array) => void;
    const backend: DiskBackend = {
      read: () => new Promise((r) => (answer = r)),
      write: () => Promise.resolve(),
    };
    const disk = new V86DiskAdapter(backend, { size: SIZE, chunkSize: CHUNK, onError: (err) => { throw err; } });
    expect(await disk.whenReadsAnswered(1000)).toBe(true); // none waiting
    const events: string[] = [];
    disk.get(0, 512, () => events.push("answer"));
    const answered = disk.whenReadsAnswered(5000).then((ok) => events.push(`answered ${ok}`));
    // A task queued before the answer comes: it must run after the waiter (what the emulator's next slice is).
    setTimeout(() => events.push("next task"), 0);
    await new Promise((r) => setTimeout(r, 10));
    expect(events).toEqual(["next task"]);
    setTimeout(() => events.push("next task"), 0);
    answer(new Uint8Array(CHUNK));
    await answered;
    expect(events).toEqual(["next task", "answer", "answered true"]);
    await new Promise((r) => setTimeout(r, 5));
    expect(events).toEqual(["next task", "answer", "answered true", "next task"]);

    // A read that is never answered (a repository that is down): false after the wait.
    disk.get(8 * CHUNK, 512, () => events.push("late"));
    expect(await disk.whenReadsAnswered(20)).toBe(false);
  });
});
