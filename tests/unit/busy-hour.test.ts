/**
 * Issue 13: an hour of a busy guest, time accelerated: a checkpoint every 5 s (RAM pages changing
 * with new content each time) and disk writes between them, with the default retention rule
 * thinning as the disk worker does (after every 30 checkpoints). The store ends within 25 % of
 * what the kept points need (each distinct disk write and RAM page some kept point still sees),
 * far below what the same hour keeps unthinned, and every point still listed restores: each
 * checkpoint's state byte for byte, the disk at each checkpoint and quiet point as it was.
 */
import "fake-indexeddb/auto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ChunkSource } from "../../src/engine/chunk-source.ts";
import { Checkpoints } from "../../src/engine/checkpoints.ts";
import { Disk } from "../../src/engine/disk.ts";
import { INDEX_RECORD_BYTES, sweepHistory } from "../../src/engine/history-sweep.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import { DEFAULT_RULE, planThinning } from "../../src/engine/retention.ts";
import { makeRepository, modelMachine } from "./repository.ts";
import { PAGE, pages, v86State } from "./v86-state.ts";

const DISK = 2 * 2 ** 20;
const RAM_PAGES = 64;
/** Per checkpoint: RAM pages that get new content, and bytes written to the disk. */
const CHANGED_PAGES = 8;
const WRITE_BYTES = 32 * 1024;
const SLOTS = DISK / WRITE_BYTES;
/** A build: most writes go to a few hot places (objects, temp files), some anywhere. */
const HOT_SLOTS = 4;
const slotOf = (step: number) => {
  const h = Math.imul(step + 1, 2654435761) >>> 0;
  return h % 4 === 0 ? (h >>> 8) % SLOTS : (h >>> 8) % HOT_SLOTS;
};
const STEP_MS = 5000;
const HOUR = Number(process.env.BUSY_MS ?? 3_600_000);

afterEach(() => vi.restoreAllMocks());

/** What a machine keeps: data records, packs, and the index records (estimated per record). */
async function storedBytes(store: LocalStore, machine: string): Promise<{ data: number; packs: number; index: number }> {
  const data = [...(await store.dataSizes(machine)).values()].reduce((n, b) => n + b, 0);
  const packs = [...(await store.packInfos(machine)).values()].reduce((n, p) => n + p.bytes, 0);
  const counts = await store.indexCounts(machine);
  return { data, packs, index: counts.groups * INDEX_RECORD_BYTES.groups + counts.log * INDEX_RECORD_BYTES.log };
}

async function busyHour(thin: boolean) {
  let clock = Date.UTC(2026, 0, 1);
  vi.spyOn(Date, "now").mockImplementation(() => clock);
  const { image, manifest, fetchFn } = makeRepository(DISK, 64 * 1024);
  const store = await LocalStore.open(`busy-hour-${thin}`);
  const machine = modelMachine("busy", "busy", clock);
  await store.putMachine(machine);
  const disk = await Disk.open(store, new ChunkSource(manifest, machine.source.repo, store, fetchFn), machine);
  const checkpoints = await Checkpoints.open(store, "busy");
  const ram = Array.from({ length: RAM_PAGES }, (_, i) => i + 1);
  let seed = 100_000;
  /** Every step's write; the step and state of every checkpoint (id), the step of every quiet point (seq). */
  const writes: { at: number; data: Uint8Array }[] = [];
  /** After each step: which write each slot holds (-1: the image's), which seed each RAM page holds. */
  const slots: Int32Array[] = [new Int32Array(SLOTS).fill(-1)];
  const rams: number[][] = [ram.slice()];
  const states = new Map<string, { state: Uint8Array; step: number }>();
  const quiet = new Map<number, number>();
  let sinceThin = 0;
  let lap = performance.now();
  for (let t = 0; t < HOUR; t += STEP_MS) {
    clock += STEP_MS;
    if (process.env.BUSY_PROFILE && t % 300_000 === 0) {
      console.log(`t=${t / 60000} min: ${(performance.now() - lap).toFixed(0)} ms`);
      lap = performance.now();
    }
    // A busy guest: a build writing files, its RAM churning.
    const at = slotOf(t / STEP_MS);
    const data = new Uint8Array(WRITE_BYTES).map((_, i) => (t / STEP_MS + i * 7) & 0xff);
    await disk.write(at * WRITE_BYTES, data);
    writes.push({ at: at * WRITE_BYTES, data });
    // 5 s pass between steps: the disk's flush timer (FLUSH_DELAY_MS) has stored the write by now.
    await disk.flush();
    if ((t / STEP_MS) % 6 === 0) {
      const marker = await disk.mark("quiet");
      quiet.set(marker.seq, writes.length);
    }
    // RAM the same way: most changed pages in a hot set (stacks, buffers), a quarter anywhere.
    for (let i = 0; i < CHANGED_PAGES; i++) ram[i % 4 === 3 ? ((t / STEP_MS) * 2 + i * 17) % RAM_PAGES : i] = seed++;
    const held = slots.at(-1)!.slice();
    held[at] = writes.length - 1;
    slots.push(held);
    rams.push(ram.slice());
    const state = v86State([pages(ram), pages([7])]);
    const record = await checkpoints.save(await disk.pointNow(), state.slice(), { auto: true });
    states.set(record.id, { state, step: writes.length });
    if (thin && ++sinceThin >= 30) {
      sinceThin = 0;
      const list = await checkpoints.list();
      const now = disk.now;
      const resume = list.filter((c) => c.branch === now.branch && c.seq <= now.seq).sort((a, b) => b.time - a.time)[0];
      const plan = planThinning({
        rule: DEFAULT_RULE,
        time: clock,
        at: now,
        branches: disk.branchList(),
        checkpoints: list,
        markers: await store.listMarkers("busy"),
        resume: resume?.id ?? null,
      });
      await sweepHistory(store, disk, checkpoints, { plan });
    }
  }
  await disk.flush();
  const bytes = await storedBytes(store, "busy");
  const kept = await checkpoints.list();
  const keptMarkers = await store.listMarkers("busy");
  // The disk after `step` writes (callers go through steps in order: replayed incrementally).
  let content = image.slice();
  let replayed = 0;
  const diskAfter = (step: number) => {
    if (step < replayed) [content, replayed] = [image.slice(), 0];
    for (; replayed < step; replayed++) content.set(writes[replayed]!.data, writes[replayed]!.at);
    return content;
  };
  // What the kept points need: every write and RAM page one of them still sees.
  const neededWrites = new Set<number>();
  const neededPages = new Set<number>();
  for (const c of kept) {
    const step = states.get(c.id)!.step;
    for (const w of slots[step]!) if (w >= 0) neededWrites.add(w);
    for (const p of rams[step]!) neededPages.add(p);
  }
  for (const m of keptMarkers) for (const w of slots[quiet.get(m.seq)!]!) if (w >= 0) neededWrites.add(w);
  const needed = neededWrites.size * WRITE_BYTES + neededPages.size * PAGE;
  return { store, disk, checkpoints, bytes, kept, keptMarkers, states, quiet, diskAfter, needed };
}

describe("an hour of a busy guest", () => {
  it("thinned by the default rule, stays under its bound, and every kept point restores", async () => {
    const unthinned = await busyHour(false);
    const total = (b: { data: number; packs: number; index: number }) => b.data + b.packs + b.index;
    unthinned.disk.close();
    unthinned.store.close();
    const { store, disk, checkpoints, bytes, kept, keptMarkers, states, quiet, diskAfter, needed } = await busyHour(true);
    // Within 25 % of what the kept points need, plus the index (a record per kept version).
    const bound = 1.25 * needed + bytes.index;
    console.log(
      `busy hour: ${kept.length} of 720 checkpoints and ${keptMarkers.length} of 120 quiet points kept; ` +
        `${(total(bytes) / 2 ** 20).toFixed(1)} MiB stored (the kept points need ${(needed / 2 ** 20).toFixed(1)} MiB; bound ${(bound / 2 ** 20).toFixed(1)} MiB) ` +
        `vs ${(total(unthinned.bytes) / 2 ** 20).toFixed(1)} MiB unthinned`,
    );
    expect(kept.length).toBeLessThanOrEqual(172);
    expect(total(bytes)).toBeLessThan(bound);
    expect(total(bytes)).toBeLessThan(total(unthinned.bytes) / 2);
    expect(bytes.index).toBeLessThan(total(bytes) / 20);
    // Every kept point, in the order it was made.
    const points = [
      ...kept.map((c) => ({ point: c, step: states.get(c.id)!.step, id: c.id })),
      ...keptMarkers.map((m) => ({ point: m, step: quiet.get(m.seq)!, id: "" })),
    ].sort((a, b) => a.step - b.step);
    for (const { point, step, id } of points) {
      if (id) expect(Buffer.from((await checkpoints.load(id)).state).equals(Buffer.from(states.get(id)!.state))).toBe(true);
      expect(Buffer.from(await disk.readAtCached(point, 0, DISK, new Map())).equals(Buffer.from(diskAfter(step)))).toBe(true);
    }
    disk.close();
    store.close();
  }, 120_000);
});
