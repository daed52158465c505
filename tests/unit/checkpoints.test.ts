/**
 * Checkpoint storage: states shaped like v86's (header, JSON info, 4 KiB-cut buffers) saved one
 * after another come back byte for byte, and a piece seen before (found by its fingerprint and
 * confirmed byte for byte) is not stored again, even when pages move within a buffer.
 */
import "fake-indexeddb/auto";
import type { IHasher } from "hash-wasm";
import { describe, expect, it } from "vitest";
import { Checkpoints } from "../../src/engine/checkpoints.ts";
import { LocalStore } from "../../src/engine/local-store.ts";

const PAGE = 4096;

/** A state in v86's layout (see checkpoint-format.ts) holding `buffers`. */
function v86State(buffers: Uint8Array[]): Uint8Array {
  let offset = 0;
  const infos = buffers.map((b) => {
    const info = { offset, length: b.byteLength };
    offset += (b.byteLength + 3) & ~3;
    return info;
  });
  const info = new TextEncoder().encode(JSON.stringify({ buffer_infos: infos, state: {} }));
  const bufferStart = (16 + info.byteLength + 3) & ~3;
  const state = new Uint8Array(bufferStart + offset);
  const header = new DataView(state.buffer);
  header.setInt32(0, 0x86768676 | 0, true);
  header.setInt32(4, 6, true);
  header.setInt32(8, state.byteLength, true);
  header.setInt32(12, info.byteLength, true);
  state.set(info, 16);
  buffers.forEach((b, i) => state.set(b, bufferStart + infos[i]!.offset));
  return state;
}

function page(seed: number): Uint8Array {
  const p = new Uint8Array(PAGE);
  let x = seed * 2654435761;
  for (let i = 0; i < PAGE; i++) p[i] = (x = (Math.imul(x, 1103515245) + 12345) | 0) >>> 24;
  return p;
}

/** Bytes of the piece before the first buffer (header and JSON info). */
const headerBytes = (state: Uint8Array) => (16 + new DataView(state.buffer, state.byteOffset).getInt32(12, true) + 3) & ~3;

/** A fingerprint that says every piece looks like every other: only the byte comparison is left. */
const everythingCollides = { init() {}, update() {}, digest: () => "same" } as unknown as IHasher;

const pages = (seeds: number[]) => {
  const out = new Uint8Array(seeds.length * PAGE);
  seeds.forEach((s, i) => out.set(page(s), i * PAGE));
  return out;
};

describe("Checkpoints", () => {
  for (const [name, fingerprinter] of [
    ["xxHash64 fingerprints", undefined],
    ["a fingerprint that always collides", everythingCollides],
  ] as const) {
    it(`stores only new pages, finds moved ones, loads every state back exactly (${name})`, async () => {
      const store = await LocalStore.open(`checkpoints-test-${name}`);
      const checkpoints = await Checkpoints.open(store, "m", fingerprinter);
      const ram = Array.from({ length: 64 }, (_, i) => i + 1);
      const vga = pages([1000, 1001]);
      const states: Uint8Array[] = [];
      /** Bytes each save added, not counting its header piece. */
      const added: number[] = [];
      const save = async (seeds: number[]) => {
        const state = v86State([pages(seeds), vga]);
        states.push(state.slice());
        const { storedBytes } = await checkpoints.save({ branch: 0, seq: states.length }, state, { auto: true });
        // The header piece is shorter than a page: it is in storedBytes when that is not whole pages.
        added.push(storedBytes - (storedBytes % PAGE === 0 ? 0 : headerBytes(state)));
      };

      await save(ram);
      const changed = [...ram];
      changed[10] = 500;
      changed[40] = 501;
      await save(changed); // two pages changed (same sizes: the header piece is shared)
      const moved = [...changed.slice(0, 5), 502, ...changed.slice(5)];
      await save(moved); // one page inserted, every later one moves by a page
      await save(moved); // the same state again
      await save(ram.slice(20)); // pages dropped: everything left was seen before

      expect(added).toEqual([66 * PAGE, 2 * PAGE, 1 * PAGE, 0, 0]);
      for (const [i, record] of (await checkpoints.list()).entries()) {
        const { state } = await checkpoints.load(record.id);
        expect(Buffer.from(state).equals(Buffer.from(states[i]!))).toBe(true);
      }
      store.close();
    });
  }
});
