/**
 * Checkpoint storage: states shaped like v86's (header, JSON info, 4 KiB-cut buffers) saved one
 * after another come back byte for byte, also after reopening the store, and a piece seen before
 * (found by its fingerprint and confirmed byte for byte) is not stored again, even when pages move
 * within a buffer, or found in place without a fingerprint. A checkpoint is listed (pending) and
 * loadable before its store lands, and unlisted if the store fails.
 */
import "fake-indexeddb/auto";
import { createHash } from "node:crypto";
import type { IHasher } from "hash-wasm";
import { openDB } from "idb";
import { describe, expect, it } from "vitest";
import { Checkpoints } from "../../src/engine/checkpoints.ts";
import { splitState } from "../../src/engine/checkpoint-format.ts";
import { LocalStore } from "../../src/engine/local-store.ts";
import { PAGE, pages, v86State } from "./v86-state.ts";

/** A fingerprint that says every piece looks like every other: only the byte comparison is left. */
const everythingCollides = { init() {}, update() {}, digest: () => "same" } as unknown as IHasher;

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
      const ids: string[] = [];
      /** Bytes each save added, not counting its header piece. */
      const added: number[] = [];
      const save = async (seeds: number[]) => {
        const state = v86State([pages(seeds), vga]);
        states.push(state.slice());
        const record = await checkpoints.save({ branch: 0, seq: states.length }, state, { auto: true });
        ids.push(record.id);
        const pieceBytes = record.storedBytes - record.refs.byteLength; // the record's own piece list
        // The header piece (raw, or deflated when alone in its pack) is shorter than a page, and
        // random pages are stored raw: whole pages are the pages stored.
        added.push(pieceBytes - (pieceBytes % PAGE));
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

      const ideal = [66 * PAGE, 2 * PAGE, 1 * PAGE, 0, 0];
      // With every fingerprint alike only the page last held is a candidate, so more is stored;
      // what must hold is that no page is ever taken for another (the loads below).
      if (fingerprinter) added.forEach((bytes, i) => expect(bytes).toBeGreaterThanOrEqual(ideal[i]!));
      else expect(added).toEqual(ideal);
      for (const [i, record] of (await checkpoints.list()).entries()) {
        const { state } = await checkpoints.load(record.id);
        expect(Buffer.from(state).equals(Buffer.from(states[i]!))).toBe(true);
      }
      // From IndexedDB alone (a reload): every state again, and a checkpoint of the resumed state
      // stores nothing new (its pages are held once loaded).
      const reopened = await Checkpoints.open(store, "m", fingerprinter);
      expect((await reopened.list()).length).toBe(states.length);
      for (let i = states.length - 1; i >= 0; i--) {
        const { state } = await reopened.load(ids[i]!);
        expect(Buffer.from(state).equals(Buffer.from(states[i]!))).toBe(true);
      }
      if (!fingerprinter) {
        const again = await reopened.save({ branch: 0, seq: 9 }, states[0]!.slice(), { auto: true });
        expect(again.storedBytes).toBe(again.refs.byteLength);
      }
      store.close();
    });
  }

  it("migrates version 2's checkpoints (pieces by SHA-256) to packs, dropping one with a missing piece", async () => {
    const name = "checkpoints-from-v2";
    const v2 = await openDB(name, 2, {
      upgrade(db) {
        for (const s of ["chunks", "manifests", "machines", "branches", "log", "blocks", "markers", "checkpoints", "statePieces"]) {
          db.createObjectStore(s);
        }
      },
    });
    const sha = (p: Uint8Array) => createHash("sha256").update(p).digest("hex");
    const states = [v86State([pages([1, 2, 3, 4]), pages([9])]), v86State([pages([1, 5, 3, 4, 6]), pages([9])])];
    const put = async (machine: string, id: string, time: number, state: Uint8Array, skip?: number) => {
      const pieces = splitState(state);
      for (const [i, p] of pieces.entries()) if (i !== skip) await v2.put("statePieces", p.slice(), sha(p));
      const record = { machine, id, branch: 0, seq: time, time, format: 1, pieces: pieces.map(sha), stateBytes: state.byteLength, storedBytes: 0, auto: true };
      await v2.put("checkpoints", record, [machine, id]);
    };
    await put("m", "b-second", 2, states[1]!);
    await put("m", "a-first", 1, states[0]!);
    await put("x", "broken", 1, v86State([pages([70, 71])]), 1);
    v2.close();

    const store = await LocalStore.open(name);
    const checkpoints = await Checkpoints.open(store, "m");
    expect((await checkpoints.load("a-first")).state).toEqual(states[0]);
    expect((await checkpoints.load("b-second")).state).toEqual(states[1]);
    expect(await store.listCheckpoints("x")).toEqual([]);
    // Saving goes on after the migrated packs, and finds the migrated pages.
    const next = await checkpoints.save({ branch: 0, seq: 3 }, states[1]!.slice(), { auto: true });
    expect(next.storedBytes).toBe(next.refs.byteLength);
    store.close();
    const db = await openDB(name);
    expect([...db.objectStoreNames]).not.toContain("statePieces");
    db.close();
  });

  it("deflates a pack of sparse pages, keeps one of random pages raw, and loads both back exactly", async () => {
    const name = "checkpoints-deflate";
    const store = await LocalStore.open(name);
    const checkpoints = await Checkpoints.open(store, "m");
    // Like the pages an idle kernel changes: mostly zeros and repeated words, a few counters.
    const sparse = new Uint8Array(128 * PAGE);
    for (let i = 0; i < sparse.length; i += 64) new DataView(sparse.buffer).setUint32(i, i % 4096 === 0 ? i * 7919 : 0xc0de, true);
    const random = pages(Array.from({ length: 64 }, (_, i) => 3000 + i));
    const state = v86State([sparse, random]);
    const record = await checkpoints.save({ branch: 0, seq: 1 }, state.slice(), { auto: true });
    // The random half is stored as it is (256 KiB); the sparse half shrinks to a small part of its 512 KiB.
    expect(record.storedBytes).toBeGreaterThan(64 * PAGE);
    expect(record.storedBytes).toBeLessThan(64 * PAGE + 64 * 1024);
    const db = await openDB(name);
    const packs = (await db.getAll("statePacks")) as { deflated?: boolean }[];
    db.close();
    expect(packs.some((p) => p.deflated)).toBe(true);
    expect(packs.some((p) => !p.deflated)).toBe(true);
    const reopened = await Checkpoints.open(store, "m");
    expect(Buffer.from((await reopened.load(record.id)).state).equals(Buffer.from(state))).toBe(true);
    store.close();
  });

  it("a checkpoint taken while a background one waits to be stored stores that one first", async () => {
    const store = await LocalStore.open("checkpoints-background");
    const checkpoints = await Checkpoints.open(store, "m");
    const shared = v86State([pages([1, 2, 3]), pages([9])]);
    const later = v86State([pages([1, 2, 4]), pages([9])]);
    // The shared point of a snapshot: stored in the background, seconds later.
    const first = await checkpoints.save({ branch: 0, seq: 0 }, shared.slice(), { auto: false }, true);
    // A checkpoint right after names the shared point's pages from memory...
    const second = await checkpoints.save({ branch: 0, seq: 1 }, later.slice(), { auto: true });
    expect(second.storedBytes).toBe(PAGE + second.refs.byteLength);
    // ...so once it is stored, the shared point's pages are too (the page may close now).
    const reopened = await Checkpoints.open(store, "m");
    expect((await reopened.load(second.id)).state).toEqual(later);
    expect((await reopened.load(first.id)).state).toEqual(shared);
    store.close();
  });

  it("lists a checkpoint, pending and loadable, before its store lands; one whose store fails is unlisted and named by no later one", async () => {
    const store = await LocalStore.open("checkpoints-listed");
    const checkpoints = await Checkpoints.open(store, "m");
    const first = v86State([pages([1, 2, 3]), pages([9])]);
    const second = v86State([pages([1, 2, 4]), pages([9])]);
    await checkpoints.save({ branch: 0, seq: 1 }, first.slice(), { auto: true });
    // The store of the next one is held back, as IndexedDB may be under a rewind's load.
    const put = store.putCheckpoint.bind(store);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    store.putCheckpoint = async (...args) => {
      await held;
      return put(...args);
    };
    let listedAt = -1;
    const saving = checkpoints.save({ branch: 0, seq: 2 }, second.slice(), { auto: true, onListed: () => (listedAt = Date.now()) });
    await new Promise((r) => setTimeout(r, 20));
    expect(listedAt).toBeGreaterThan(0);
    const [pending] = (await checkpoints.list()).filter((c) => c.seq === 2);
    expect(pending && checkpoints.isPending(pending.id)).toBe(true);
    expect((await checkpoints.load(pending!.id)).state).toEqual(second);
    release();
    const record = await saving;
    expect(checkpoints.isPending(record.id)).toBe(false);
    expect((await (await Checkpoints.open(store, "m")).load(record.id)).state).toEqual(second);

    // A store that fails (a full quota): not listed, and its new page is stored again by the next.
    const third = v86State([pages([1, 2, 5]), pages([9])]);
    store.putCheckpoint = () => Promise.reject(new DOMException("full", "QuotaExceededError"));
    await expect(checkpoints.save({ branch: 0, seq: 3 }, third.slice(), { auto: true })).rejects.toThrow("full");
    expect((await checkpoints.list()).map((c) => c.seq)).toEqual([1, 2]);
    store.putCheckpoint = put;
    const again = await checkpoints.save({ branch: 0, seq: 3 }, third.slice(), { auto: true });
    expect(again.storedBytes).toBe(PAGE + again.refs.byteLength);
    expect((await (await Checkpoints.open(store, "m")).load(again.id)).state).toEqual(third);
    store.close();
  });

  it("finds the pages still where the last checkpoint had them by comparing bytes, without fingerprinting them", async () => {
    const store = await LocalStore.open("checkpoints-in-place");
    const counting = countingFingerprinter();
    const checkpoints = await Checkpoints.open(store, "m", counting.hasher);
    const ram = Array.from({ length: 32 }, (_, i) => i + 1);
    const first = await checkpoints.save({ branch: 0, seq: 1 }, v86State([pages(ram)]), { auto: true });
    expect(counting.hashed()).toBe(33); // the header piece and every page
    const changed = [...ram];
    changed[7] = 700;
    const second = await checkpoints.save({ branch: 0, seq: 2 }, v86State([pages(changed)]), { auto: true });
    expect(counting.hashed()).toBe(1); // the changed page alone
    expect(second.storedBytes).toBe(PAGE + second.refs.byteLength);
    // A rewind to the first, then a state like it but one page: compared with the first's places.
    await checkpoints.load(first.id, true);
    const third = [...ram];
    third[20] = 900;
    await checkpoints.save({ branch: 0, seq: 3 }, v86State([pages(third)]), { auto: true });
    expect(counting.hashed()).toBe(1);
    const reopened = await Checkpoints.open(store, "m");
    expect((await reopened.load(second.id)).state).toEqual(v86State([pages(changed)]));
    store.close();
  });
});

/** A fingerprinter (SHA-256, as good as xxHash64 here) that counts the pieces it hashed since last asked. */
function countingFingerprinter(): { hasher: IHasher; hashed: () => number } {
  let count = 0;
  let hash = createHash("sha256");
  const hasher = {
    init() {
      hash = createHash("sha256");
      count++;
    },
    update(data: Uint8Array) {
      hash.update(data);
    },
    digest: () => hash.digest("hex"),
  } as unknown as IHasher;
  return {
    hasher,
    hashed: () => {
      const n = count;
      count = 0;
      return n;
    },
  };
}
