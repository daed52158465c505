/**
 * Machine checkpoints: v86 states stored as shared, content-addressed pieces
 * (cutting rule: checkpoint-format.ts), each tied to a disk point in the write log.
 */
import { createSHA256, createXXHash64, type IHasher } from "hash-wasm";
import { CHECKPOINT_FORMAT, joinState, splitState } from "./checkpoint-format.ts";
import type { LocalStore } from "./local-store.ts";
import { ByteLru } from "./lru.ts";
import type { CheckpointRecord, Point } from "./store-format.ts";
import { equalBytes } from "./util.ts";

export interface SaveOptions {
  auto: boolean;
  thumbnail?: string;
  name?: string;
  /** The checkpoint's id when the caller already announced one (a shared point); else a new one. */
  id?: string;
}

/**
 * Pieces kept in worker memory. Checkpoints share most pieces, so this holds the recent ones
 * whole and makes a rewind read only the few pieces it lacks from IndexedDB (a state is ~9,000
 * pieces: reading them all costs far more than restoring).
 */
const PIECE_MEMORY = 192 * 1024 * 1024;
/** Fingerprints remembered (see identify); forgotten all at once past this many. */
const FINGERPRINTS = 200_000;
/** How long a background checkpoint write waits (see save). */
const BACKGROUND_DELAY_MS = 5000;

export class Checkpoints {
  private readonly pieces = new ByteLru<string>(PIECE_MEMORY);
  /** Fast fingerprint → SHA-256 of a piece seen before (see identify). */
  private readonly byFingerprint = new Map<string, string>();
  /** The last background write (see save). */
  writing: Promise<void> = Promise.resolve();
  /** A background write that failed (a full quota, say): retried before the next checkpoint's. */
  private unstored: (() => Promise<void>) | undefined;
  onBackgroundError: (err: unknown) => void = () => undefined;

  private constructor(
    private readonly store: LocalStore,
    private readonly machine: string,
    /** Pieces already stored: only the others are written. */
    private readonly known: Set<string>,
    // hash-wasm's hasher is synchronous once built: thousands of 4 KiB pieces without an
    // await each (WebCrypto's digest is one promise per call).
    private readonly hasher: IHasher,
    private readonly fingerprinter: IHasher,
    /** This machine's checkpoints, kept in memory: listing them is on every rewind's path. */
    private readonly records: CheckpointRecord[],
  ) {}

  /** `fingerprinter`: the fast hash of identify() (xxHash64 unless a test passes a weaker one). */
  static async open(store: LocalStore, machine: string, fingerprinter?: IHasher): Promise<Checkpoints> {
    const [known, hasher, fingerprints, records] = await Promise.all([
      store.statePieceHashes(),
      createSHA256(),
      fingerprinter ?? createXXHash64(),
      store.listCheckpoints(machine),
    ]);
    return new Checkpoints(store, machine, known, hasher, fingerprints, records);
  }

  /**
   * Stores `state` as a checkpoint at `point`; returns its record (with the bytes it added).
   * `background`: returns once the checkpoint is usable from memory and lets IndexedDB catch up
   * (a shared snapshot's first checkpoint: tens of MiB that must not delay resuming it); a
   * failed write is reported to `onBackgroundError` and tried again by the next save.
   */
  async save(point: Point, state: Uint8Array, options: SaveOptions, background = false): Promise<CheckpointRecord> {
    const pieces = splitState(state);
    const hashes: string[] = [];
    const fresh = new Map<string, Uint8Array>();
    let storedBytes = 0;
    for (const piece of pieces) {
      const hash = this.identify(piece);
      hashes.push(hash);
      if (!this.known.has(hash) && !fresh.has(hash)) {
        fresh.set(hash, piece.slice());
        storedBytes += piece.byteLength;
      }
      if (!this.pieces.has(hash)) this.pieces.set(hash, fresh.get(hash) ?? piece.slice());
    }
    const record: CheckpointRecord = {
      machine: this.machine,
      id: options.id ?? crypto.randomUUID(),
      branch: point.branch,
      seq: point.seq,
      time: Date.now(),
      format: CHECKPOINT_FORMAT,
      pieces: hashes,
      stateBytes: state.byteLength,
      storedBytes,
      auto: options.auto,
      ...(options.thumbnail === undefined ? {} : { thumbnail: options.thumbnail }),
      ...(options.name === undefined ? {} : { name: options.name }),
    };
    const write = () =>
      this.store.putCheckpoint(record, fresh).then(() => {
        for (const hash of fresh.keys()) this.known.add(hash);
      });
    if (background) {
      // Deferred: storing tens of MiB competes for the CPU with the emulator starting up.
      this.writing = new Promise((r) => setTimeout(r, BACKGROUND_DELAY_MS))
        .then(write)
        .catch((err: unknown) => {
          this.unstored = write;
          this.onBackgroundError(err);
        });
    } else {
      if (this.unstored) {
        await this.unstored();
        this.unstored = undefined;
      }
      await write();
    }
    this.records.push(record);
    return record;
  }

  /**
   * The SHA-256 of a piece. Between two checkpoints most of RAM is unchanged, and hashing every
   * page of a 64 MiB state took ~250 ms of this worker's time, every few seconds while the guest
   * is busy: a fast fingerprint finds the pieces seen before, and a byte comparison with the copy
   * held in memory confirms them (so a fingerprint collision costs a hash, never a wrong piece).
   */
  private identify(piece: Uint8Array): string {
    this.fingerprinter.init();
    this.fingerprinter.update(piece);
    const fingerprint = this.fingerprinter.digest("hex");
    const seen = this.byFingerprint.get(fingerprint);
    if (seen !== undefined) {
      const held = this.pieces.peek(seen);
      if (held && equalBytes(held, piece)) return seen;
    }
    this.hasher.init();
    this.hasher.update(piece);
    const hash = this.hasher.digest("hex");
    if (this.byFingerprint.size >= FINGERPRINTS) this.byFingerprint.clear();
    this.byFingerprint.set(fingerprint, hash);
    return hash;
  }

  /** The checkpoint and its state, byte for byte as v86 saved it. */
  async load(id: string): Promise<{ record: CheckpointRecord; state: Uint8Array }> {
    const record = this.records.find((r) => r.id === id);
    if (!record) throw new Error(`no checkpoint ${id} in this machine`);
    const got = new Map<string, Uint8Array>();
    const lacking: string[] = [];
    for (const h of new Set(record.pieces)) {
      const hot = this.pieces.get(h);
      if (hot) got.set(h, hot);
      else lacking.push(h);
    }
    const loaded = lacking.length ? await this.store.statePieces(lacking) : [];
    lacking.forEach((h, i) => {
      got.set(h, loaded[i]!);
      this.pieces.set(h, loaded[i]!);
    });
    const state = joinState(record.pieces.map((h) => got.get(h)!));
    if (state.byteLength !== record.stateBytes) throw new Error(`checkpoint ${id} is damaged (size mismatch)`);
    return { record, state };
  }

  list(): Promise<CheckpointRecord[]> {
    return Promise.resolve([...this.records]);
  }

  /** Re-reads what is stored (after the machine's history was cleared or garbage collected). */
  async refresh(): Promise<void> {
    this.known.clear();
    for (const h of await this.store.statePieceHashes()) this.known.add(h);
    this.records.splice(0, this.records.length, ...(await this.store.listCheckpoints(this.machine)));
  }
}
