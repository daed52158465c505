/**
 * Machine checkpoints: v86 states stored as shared, content-addressed pieces
 * (cutting rule: checkpoint-format.ts), each tied to a disk point in the write log.
 */
import { createSHA256, type IHasher } from "hash-wasm";
import { CHECKPOINT_FORMAT, joinState, splitState } from "./checkpoint-format.ts";
import type { LocalStore } from "./local-store.ts";
import type { CheckpointRecord, Point } from "./store-format.ts";

export interface SaveOptions {
  auto: boolean;
  thumbnail?: string;
  name?: string;
}

export class Checkpoints {
  private constructor(
    private readonly store: LocalStore,
    private readonly machine: string,
    /** Pieces already stored: only the others are written. */
    private readonly known: Set<string>,
    // hash-wasm's hasher is synchronous once built: thousands of 4 KiB pieces without an
    // await each (WebCrypto's digest is one promise per call).
    private readonly hasher: IHasher,
  ) {}

  static async open(store: LocalStore, machine: string): Promise<Checkpoints> {
    return new Checkpoints(store, machine, await store.statePieceHashes(), await createSHA256());
  }

  /** Stores `state` as a checkpoint at `point`; returns its record (with the bytes it added). */
  async save(point: Point, state: Uint8Array, options: SaveOptions): Promise<CheckpointRecord> {
    const pieces = splitState(state);
    const hashes: string[] = [];
    const fresh = new Map<string, Uint8Array>();
    let storedBytes = 0;
    for (const piece of pieces) {
      this.hasher.init();
      this.hasher.update(piece);
      const hash = this.hasher.digest("hex");
      hashes.push(hash);
      if (!this.known.has(hash) && !fresh.has(hash)) {
        fresh.set(hash, piece.slice());
        storedBytes += piece.byteLength;
      }
    }
    const record: CheckpointRecord = {
      machine: this.machine,
      id: crypto.randomUUID(),
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
    await this.store.putCheckpoint(record, fresh);
    for (const hash of fresh.keys()) this.known.add(hash);
    return record;
  }

  /** The checkpoint and its state, byte for byte as v86 saved it. */
  async load(id: string): Promise<{ record: CheckpointRecord; state: Uint8Array }> {
    const record = await this.store.getCheckpoint(this.machine, id);
    if (!record) throw new Error(`no checkpoint ${id} in this machine`);
    const state = joinState(await this.store.statePieces(record.pieces));
    if (state.byteLength !== record.stateBytes) throw new Error(`checkpoint ${id} is damaged (size mismatch)`);
    return { record, state };
  }

  list(): Promise<CheckpointRecord[]> {
    return this.store.listCheckpoints(this.machine);
  }

  /** Forgets which pieces exist (after the store collected garbage). */
  async refresh(): Promise<void> {
    this.known.clear();
    for (const h of await this.store.statePieceHashes()) this.known.add(h);
  }
}
