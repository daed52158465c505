/**
 * Machine checkpoints: v86 states cut into pieces (checkpoint-format.ts), each piece stored once
 * per machine in packs, each checkpoint tied to a disk point in the write log.
 */
import type { Hardware } from "./repo-format.ts";
import { createXXHash64, type IHasher } from "hash-wasm";
import { CHECKPOINT_FORMAT, decodeRefs, deflatePack, encodeRefs, joinState, PackBuilder, packFrom, splitState, unpack, type Place } from "./checkpoint-format.ts";
import type { LocalStore } from "./local-store.ts";
import { ByteLru } from "./lru.ts";
import type { CheckpointRecord, Point, StatePack } from "./store-format.ts";
import { equalBytes } from "./util.ts";

export interface SaveOptions {
  auto: boolean;
  thumbnail?: string;
  name?: string;
  /** The checkpoint's id when the caller already announced one (a shared point); else a new one. */
  id?: string;
  /** The machine shape the state was taken in (store-format.ts CheckpointRecord.hardware). */
  hardware?: Hardware;
}

/**
 * Pieces kept in worker memory. Checkpoints share most pieces, so this holds the recent ones
 * whole: a rewind reads only the packs of pieces it lacks, and a new checkpoint recognises pages
 * it holds (a page not held here is stored again: sharing, not correctness, depends on it).
 */
const PIECE_MEMORY = 192 * 1024 * 1024;
/** Fingerprints remembered (see identify); forgotten all at once past this many. */
const FINGERPRINTS = 200_000;
/** How long a background checkpoint write waits (see save). */
const BACKGROUND_DELAY_MS = 5000;

/** A piece's place as the key of the in-memory cache. */
const placeKey = ([pack, index]: Place) => `${pack} ${index}`;

export class Checkpoints {
  /** Pieces held in memory, by placeKey. */
  private readonly pieces = new ByteLru<string>(PIECE_MEMORY);
  /** Fast fingerprint → place of a piece seen before (see identify). */
  private readonly byFingerprint = new Map<string, Place>();
  /** The last background write (see save). */
  writing: Promise<void> = Promise.resolve();
  /** Ends the wait of a background write that has not started yet (see save). */
  private hurry: (() => void) | undefined;
  /** A background write that failed (a full quota, say): retried before the next checkpoint's. */
  private unstored: (() => Promise<void>) | undefined;
  onBackgroundError: (err: unknown) => void = () => undefined;

  private constructor(
    private readonly store: LocalStore,
    private readonly machine: string,
    /** Number of the next pack this machine stores. */
    private nextPack: number,
    // hash-wasm's hasher is synchronous once built: thousands of 4 KiB pieces without an await each.
    private readonly fingerprinter: IHasher,
    /** This machine's checkpoints, kept in memory: listing them is on every rewind's path. */
    private readonly records: CheckpointRecord[],
  ) {}

  /** `fingerprinter`: the fast hash of identify() (xxHash64 unless a test passes a weaker one). */
  static async open(store: LocalStore, machine: string, fingerprinter?: IHasher): Promise<Checkpoints> {
    const [lastPack, fingerprints, records] = await Promise.all([
      store.lastPack(machine),
      fingerprinter ?? createXXHash64(),
      store.listCheckpoints(machine),
    ]);
    return new Checkpoints(store, machine, lastPack + 1, fingerprints, records);
  }

  /**
   * Stores `state` as a checkpoint at `point`; returns its record (with the bytes it added).
   * `background`: returns once the checkpoint is usable from memory and lets IndexedDB catch up
   * (a shared snapshot's first checkpoint: tens of MiB that must not delay resuming it); a
   * failed write is reported to `onBackgroundError` and tried again by the next save. Its
   * `storedBytes` counts only the record until its packs are stored.
   */
  async save(point: Point, state: Uint8Array, options: SaveOptions, background = false): Promise<CheckpointRecord> {
    const pieces = splitState(state);
    const refs = new Uint32Array(2 * pieces.length);
    // New pieces, placed in packs numbered from nextPack; known to identify() only once stored
    // (or at once for a background write, whose record is in use from memory meanwhile).
    const fresh = new Map<string, { place: Place; piece: Uint8Array }>();
    const added: { place: Place; piece: Uint8Array; fingerprint: string }[] = [];
    const stored = new Map<number, StatePack>();
    const builder = new PackBuilder(this.nextPack, (n, list) => stored.set(n, packFrom(list)));
    for (const [i, piece] of pieces.entries()) {
      const fingerprint = this.fingerprint(piece);
      let place = this.identify(fingerprint, piece);
      if (place === undefined) {
        const twin = fresh.get(fingerprint);
        if (twin && equalBytes(twin.piece, piece)) place = twin.place;
      }
      if (place === undefined) {
        const copy = piece.slice();
        place = builder.add(copy);
        added.push({ place, piece: copy, fingerprint });
        if (!fresh.has(fingerprint)) fresh.set(fingerprint, { place, piece: copy });
      }
      refs.set(place, 2 * i);
    }
    this.nextPack = builder.close();
    const learn = () => {
      for (const { place, piece, fingerprint } of added) this.hold(place, piece, fingerprint);
    };
    const encoded = encodeRefs(refs);
    // The record's own weight counts too: its piece list and thumbnail (a few KiB each).
    const recordBytes = encoded.byteLength + (options.thumbnail?.length ?? 0);
    const record: CheckpointRecord = {
      machine: this.machine,
      id: options.id ?? crypto.randomUUID(),
      branch: point.branch,
      seq: point.seq,
      time: Date.now(),
      format: CHECKPOINT_FORMAT,
      pieceCount: pieces.length,
      refs: encoded,
      stateBytes: state.byteLength,
      storedBytes: recordBytes, // + the packs, once deflated (see write)
      auto: options.auto,
      ...(options.thumbnail === undefined ? {} : { thumbnail: options.thumbnail }),
      ...(options.name === undefined ? {} : { name: options.name }),
      ...(options.hardware === undefined ? {} : { hardware: options.hardware }),
    };
    // Deflated here, not above: a background checkpoint is in use before this runs.
    const write = async () => {
      let packBytes = 0;
      for (const [n, pack] of stored) {
        const kept = await deflatePack(pack);
        stored.set(n, kept);
        packBytes += kept.bytes.byteLength;
      }
      record.storedBytes = recordBytes + packBytes;
      await this.store.putCheckpoint(record, stored);
    };
    if (background) {
      learn();
      // Deferred: storing tens of MiB competes for the CPU with the emulator starting up.
      const delay = new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, BACKGROUND_DELAY_MS);
        this.hurry = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.writing = delay
        .then(() => {
          this.hurry = undefined;
          return write();
        })
        .catch((err: unknown) => {
          this.unstored = write;
          this.onBackgroundError(err);
        });
    } else {
      // Pieces of a background checkpoint are named by later ones from memory: it must be stored
      // before any of them is (or a page closed meanwhile would leave them naming missing packs).
      this.hurry?.();
      await this.writing;
      if (this.unstored) {
        await this.unstored();
        this.unstored = undefined;
      }
      await write();
      learn();
    }
    this.records.push(record);
    return record;
  }

  private fingerprint(piece: Uint8Array): string {
    this.fingerprinter.init();
    this.fingerprinter.update(piece);
    return this.fingerprinter.digest("hex");
  }

  /**
   * The place of a stored piece equal to `piece`, if one is held in memory. Between two
   * checkpoints most of RAM is unchanged: a fast fingerprint finds the candidate and a byte
   * comparison confirms it, so a fingerprint collision costs a stored page, never a wrong one.
   */
  private identify(fingerprint: string, piece: Uint8Array): Place | undefined {
    const place = this.byFingerprint.get(fingerprint);
    if (place === undefined) return undefined;
    const held = this.pieces.peek(placeKey(place));
    return held && equalBytes(held, piece) ? place : undefined;
  }

  /** Keeps a stored piece in memory and makes it findable by its fingerprint. */
  private hold(place: Place, piece: Uint8Array, fingerprint = this.fingerprint(piece)): void {
    this.pieces.set(placeKey(place), piece);
    if (this.byFingerprint.size >= FINGERPRINTS) this.byFingerprint.clear();
    this.byFingerprint.set(fingerprint, place);
  }

  /** The checkpoint and its state, byte for byte as v86 saved it. */
  async load(id: string): Promise<{ record: CheckpointRecord; state: Uint8Array }> {
    const record = this.records.find((r) => r.id === id);
    if (!record) throw new Error(`no checkpoint ${id} in this machine`);
    const refs = decodeRefs(record.refs);
    if (refs.length !== 2 * record.pieceCount) throw new Error(`checkpoint ${id} is damaged (piece list)`);
    const places: Place[] = [];
    for (let i = 0; i < refs.length; i += 2) places.push([refs[i]!, refs[i + 1]!]);
    const pieces = places.map((place) => this.pieces.get(placeKey(place)));
    const lacking = new Set(places.filter((_, i) => !pieces[i]).map(([pack]) => pack));
    if (lacking.size) {
      const read = new Map<string, Uint8Array>();
      for (const [n, pack] of await this.store.statePacks(this.machine, [...lacking])) {
        unpack(pack).forEach((piece, index) => {
          read.set(placeKey([n, index]), piece);
          // Held from now on: the machine's next checkpoint finds these pages without storing them again.
          this.hold([n, index], piece);
        });
      }
      for (const [i, place] of places.entries()) {
        pieces[i] ??= read.get(placeKey(place));
        if (!pieces[i]) throw new Error(`checkpoint ${id} is damaged (piece ${i} is not in its pack)`);
      }
    }
    const state = joinState(pieces as Uint8Array[]);
    if (state.byteLength !== record.stateBytes) throw new Error(`checkpoint ${id} is damaged (size mismatch)`);
    return { record, state };
  }

  list(): Promise<CheckpointRecord[]> {
    return Promise.resolve([...this.records]);
  }

  /** Re-reads what is stored (after the machine's history was cleared). */
  async refresh(): Promise<void> {
    this.nextPack = (await this.store.lastPack(this.machine)) + 1;
    this.records.splice(0, this.records.length, ...(await this.store.listCheckpoints(this.machine)));
  }
}
