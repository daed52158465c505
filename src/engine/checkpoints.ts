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
  /**
   * Called once the checkpoint is listed and loadable from memory, before its packs are stored: a
   * rewind asked for meanwhile need not wait for the store (disk-service.ts restoreCheckpoint).
   */
  onListed?: () => void;
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
export const placeKey = ([pack, index]: Place) => `${pack} ${index}`;

/** What a committed sweep changed in a machine's checkpoints (see Checkpoints.exclusive). */
export interface CheckpointSweep {
  deleted: string[];
  /** Records whose piece list was rewritten (pieces moved by compaction). */
  rewritten: CheckpointRecord[];
  /** placeKey of a piece that moved → its new place. */
  moved: Map<string, Place>;
  /** placeKeys of pieces deleted. */
  dead: Set<string>;
  nextPack: number;
}

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
  /** Checkpoints in use from memory whose write has not landed yet. */
  private readonly pending = new Set<string>();
  /** New pieces of the checkpoint being written (not held until stored), by placeKey: load() reads them. */
  private readonly unstoredPieces = new Map<string, Uint8Array>();
  /**
   * The piece list (pack, index pairs) of the last checkpoint stored or rewound to: most pages of
   * the next state are where they were, so a byte comparison with the piece held there
   * identifies them without fingerprinting (see saveNow). Forgotten when a sweep moves or
   * deletes pieces.
   */
  private lastRefs: Uint32Array | undefined;
  /** Saves and sweeps, one at a time: a sweep must never see half a save's dedup decisions. */
  private queue: Promise<unknown> = Promise.resolve();
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
  save(point: Point, state: Uint8Array, options: SaveOptions, background = false): Promise<CheckpointRecord> {
    return this.serial(() => this.saveNow(point, state, options, background));
  }

  /** Runs `fn` after every save and sweep queued before it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async saveNow(point: Point, state: Uint8Array, options: SaveOptions, background: boolean): Promise<CheckpointRecord> {
    const pieces = splitState(state);
    const refs = new Uint32Array(2 * pieces.length);
    // New pieces, placed in packs numbered from nextPack; known to identify() only once stored
    // (or at once for a background write, whose record is in use from memory meanwhile).
    const fresh = new Map<string, { place: Place; piece: Uint8Array }>();
    const added: { place: Place; piece: Uint8Array; fingerprint: string }[] = [];
    const stored = new Map<number, StatePack>();
    const builder = new PackBuilder(this.nextPack, (n, list) => stored.set(n, packFrom(list)));
    const last = this.lastRefs;
    for (const [i, piece] of pieces.entries()) {
      if (last && 2 * i + 1 < last.length) {
        const before: Place = [last[2 * i]!, last[2 * i + 1]!];
        const held = this.pieces.peek(placeKey(before));
        if (held && equalBytes(held, piece)) {
          refs.set(before, 2 * i);
          continue;
        }
      }
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
      this.lastRefs = refs;
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
    // Listed at once, pending until stored, and loadable meanwhile: a background checkpoint's new
    // pieces are held (and identifiable) at once; another's are only readable until stored (the
    // next save, queued behind this one, finds them held then).
    if (background) learn();
    else for (const { place, piece } of added) this.unstoredPieces.set(placeKey(place), piece);
    this.records.push(record);
    this.pending.add(record.id);
    options.onListed?.();
    if (background) {
      // Deferred: storing tens of MiB competes for the CPU with the emulator starting up.
      const delay = new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, BACKGROUND_DELAY_MS);
        this.hurry = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      const stored = async () => {
        await write();
        this.pending.delete(record.id);
      };
      this.writing = delay
        .then(() => {
          this.hurry = undefined;
          return stored();
        })
        .catch((err: unknown) => {
          this.unstored = stored;
          this.onBackgroundError(err);
        });
    } else {
      try {
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
      } catch (err) {
        // Not stored: not a checkpoint (the page reports the failure).
        this.records.splice(this.records.indexOf(record), 1);
        throw err;
      } finally {
        this.pending.delete(record.id);
        this.unstoredPieces.clear();
      }
    }
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

  /**
   * The checkpoint and its state, byte for byte as v86 saved it. `resumed`: the machine runs on
   * from it (a rewind), so the next checkpoint compares its pages with this one's.
   */
  async load(id: string, resumed = false): Promise<{ record: CheckpointRecord; state: Uint8Array }> {
    const record = this.records.find((r) => r.id === id);
    if (!record) throw new Error(`no checkpoint ${id} in this machine`);
    const refs = decodeRefs(record.refs);
    if (refs.length !== 2 * record.pieceCount) throw new Error(`checkpoint ${id} is damaged (piece list)`);
    const places: Place[] = [];
    for (let i = 0; i < refs.length; i += 2) places.push([refs[i]!, refs[i + 1]!]);
    const pieces = places.map((place) => {
      const key = placeKey(place);
      return this.pieces.get(key) ?? this.unstoredPieces.get(key);
    });
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
    // Only pieces held count there, so an unstored checkpoint's places are harmless.
    if (resumed) this.lastRefs = refs;
    return { record, state };
  }

  list(): Promise<CheckpointRecord[]> {
    return Promise.resolve([...this.records]);
  }

  /** Records that a checkpoint was published as snapshot `id` (it is then never thinned). */
  markPublished(checkpoint: string, id: string): Promise<void> {
    return this.serial(async () => {
      const record = this.records.find((r) => r.id === checkpoint);
      if (!record || record.published?.includes(id)) return;
      record.published = [...(record.published ?? []), id];
      // A background checkpoint is stored whole by its own write, with this field.
      if (!this.pending.has(record.id)) await this.store.putCheckpointRecord(record);
    });
  }

  /** True while a checkpoint is usable from memory only (its background write has not landed). */
  isPending(id: string): boolean {
    return this.pending.has(id);
  }

  /**
   * Runs a sweep (history-sweep.ts) with every checkpoint stored and no save running; `fn` gets
   * the records and the next free pack number, and returns what it changed, applied here after.
   */
  exclusive<T>(fn: (view: { records: readonly CheckpointRecord[]; nextPack: number }) => Promise<{ result: T; applied?: CheckpointSweep }>): Promise<T> {
    return this.serial(async () => {
      this.hurry?.();
      await this.writing;
      if (this.unstored) {
        await this.unstored();
        this.unstored = undefined;
      }
      const { result, applied } = await fn({ records: [...this.records], nextPack: this.nextPack });
      if (applied) this.apply(applied);
      return result;
    });
  }

  /** Brings memory in line with a committed sweep: records gone or rewritten, pieces moved or dead. */
  private apply(sweep: CheckpointSweep): void {
    this.lastRefs = undefined;
    const gone = new Set(sweep.deleted);
    const rewritten = new Map(sweep.rewritten.map((r) => [r.id, r]));
    const kept = this.records.filter((r) => !gone.has(r.id)).map((r) => rewritten.get(r.id) ?? r);
    this.records.splice(0, this.records.length, ...kept);
    this.nextPack = Math.max(this.nextPack, sweep.nextPack);
    // Pieces held under a place that moved are held under the new one; dead ones are forgotten,
    // so no later checkpoint names a place that no longer exists.
    const moved: [string, Place, Uint8Array | undefined][] = [];
    for (const [from, to] of sweep.moved) moved.push([from, to, this.pieces.peek(from)]);
    for (const [from] of sweep.moved) this.pieces.delete(from);
    for (const key of sweep.dead) this.pieces.delete(key);
    for (const [, to, piece] of moved) if (piece) this.pieces.set(placeKey(to), piece);
    const relocated = new Map([...sweep.moved].map(([from, to]) => [from, to]));
    for (const [fingerprint, place] of this.byFingerprint) {
      const key = placeKey(place);
      const to = relocated.get(key);
      if (to) this.byFingerprint.set(fingerprint, to);
      else if (sweep.dead.has(key)) this.byFingerprint.delete(fingerprint);
    }
  }

  /** Re-reads what is stored (after the machine's history was cleared). */
  async refresh(): Promise<void> {
    this.pieces.clear();
    this.byFingerprint.clear();
    this.lastRefs = undefined;
    this.nextPack = (await this.store.lastPack(this.machine)) + 1;
    this.records.splice(0, this.records.length, ...(await this.store.listCheckpoints(this.machine)));
  }
}
