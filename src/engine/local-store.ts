/**
 * Typed access to the local IndexedDB store (layout and version: store-format.ts).
 * Knows nothing of disks or timelines: each method is one well-defined read or transaction.
 */
import { openDB, type IDBPDatabase } from "idb";
import {
  BLOCK_SIZE,
  DB_NAME,
  STORE_VERSION,
  type BranchRecord,
  type CheckpointRecord,
  type LogRecord,
  type MachineRecord,
  type ManifestRecord,
  type MarkerRecord,
  type SandglassDB,
} from "./store-format.ts";

/** A block version waiting to be written, with the log record that produced it. */
export interface PendingBlock {
  block: number;
  branch: number;
  seq: number;
  data: Uint8Array;
}

/** Everything one flush commits atomically. */
export interface FlushBatch {
  machine: MachineRecord;
  branches: BranchRecord[];
  log: LogRecord[];
  blocks: PendingBlock[];
  markers: MarkerRecord[];
}

/** Upper bound for array keys that start with `prefix` (arrays sort after every other key type). */
const after = (...prefix: (string | number)[]) => [...prefix, []];

/** How a block of zeros is stored (see store-format.ts, `blocks`). */
const ZERO_BLOCK = new Uint8Array(0);

function isZeroBlock(data: Uint8Array): boolean {
  if (data.byteOffset % 4 !== 0 || data.byteLength % 4 !== 0) return data.every((b) => b === 0);
  // Four bytes at a time: ~30 ms for the 16,384 blocks of a 64 MiB write.
  const words = new Uint32Array(data.buffer, data.byteOffset, data.byteLength / 4);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  return true;
}

/** Raised when the browser refuses to store more; carries a message a person can act on. */
export class QuotaError extends Error {
  constructor(what: string) {
    super(`Browser storage is full: could not save ${what}. Free space (delete machines you no longer need) and try again.`);
    this.name = "QuotaError";
  }
}

/** The browser refused to store more (as raised by IndexedDB, or already turned into a QuotaError). */
export function isQuotaError(err: unknown): boolean {
  return err instanceof QuotaError || (err instanceof DOMException && err.name === "QuotaExceededError");
}

function rethrowQuota(err: unknown, what: string): never {
  if (isQuotaError(err) && !(err instanceof QuotaError)) throw new QuotaError(what);
  throw err;
}

export class LocalStore {
  private constructor(private readonly db: IDBPDatabase<SandglassDB>) {}

  static async open(name = DB_NAME): Promise<LocalStore> {
    const db = await openDB<SandglassDB>(name, STORE_VERSION, {
      upgrade(db, oldVersion) {
        // Version 1 is the first layout; later versions add `if (oldVersion < N)` steps below it.
        if (oldVersion < 1) {
          db.createObjectStore("chunks");
          db.createObjectStore("manifests");
          db.createObjectStore("machines");
          db.createObjectStore("branches");
          db.createObjectStore("log");
          db.createObjectStore("blocks");
          db.createObjectStore("markers");
          db.createObjectStore("checkpoints");
          db.createObjectStore("statePieces");
        }
        // Version 2 stores a block of zeros as an empty array: the same stores, read by a newer
        // blockVersion(); nothing to convert, but version 1 code must not open such a store.
      },
      blocking() {
        // A newer version of Sandglass opened in another tab: let it upgrade.
        db.close();
      },
    });
    return new LocalStore(db);
  }

  close(): void {
    this.db.close();
  }

  // ── repository cache ────────────────────────────────────────────────────────────────────────

  getChunk(hash: string): Promise<Uint8Array | undefined> {
    return this.db.get("chunks", hash);
  }

  async putChunk(hash: string, data: Uint8Array): Promise<void> {
    try {
      await this.db.put("chunks", data, hash);
    } catch (err) {
      rethrowQuota(err, "a disk chunk");
    }
  }

  getManifest(url: string): Promise<ManifestRecord | undefined> {
    return this.db.get("manifests", url);
  }

  async putManifest(record: ManifestRecord): Promise<void> {
    await this.db.put("manifests", record, record.url);
  }

  // ── machines ────────────────────────────────────────────────────────────────────────────────

  getMachine(id: string): Promise<MachineRecord | undefined> {
    return this.db.get("machines", id);
  }

  listMachines(): Promise<MachineRecord[]> {
    return this.db.getAll("machines");
  }

  async putMachine(machine: MachineRecord): Promise<void> {
    try {
      await this.db.put("machines", machine, machine.id);
    } catch (err) {
      rethrowQuota(err, "the machine");
    }
  }

  listBranches(machine: string): Promise<BranchRecord[]> {
    return this.db.getAll("branches", IDBKeyRange.bound([machine], after(machine)));
  }

  /** Every block that has at least one written version on any branch (keys only: cheap). */
  async writtenBlocks(machine: string): Promise<Set<number>> {
    const keys = await this.db.getAllKeys("blocks", IDBKeyRange.bound([machine], after(machine)));
    return new Set(keys.map((k) => k[1]));
  }

  /**
   * The newest version of `block` on `branch` at or before `maxSeq`: one reverse cursor step, so
   * lookups cost the same whatever the length of history.
   */
  async blockVersion(machine: string, block: number, branch: number, maxSeq: number): Promise<Uint8Array | undefined> {
    const range = IDBKeyRange.bound([machine, block, branch, 0], [machine, block, branch, maxSeq]);
    const cursor = await this.db.transaction("blocks").store.openCursor(range, "prev");
    const value = cursor?.value;
    return value?.byteLength === 0 ? new Uint8Array(BLOCK_SIZE) : value;
  }

  listLog(machine: string, fromSeq = 0, limit?: number): Promise<LogRecord[]> {
    return this.db.getAll("log", IDBKeyRange.bound([machine, fromSeq], after(machine)), limit);
  }

  listMarkers(machine: string): Promise<MarkerRecord[]> {
    return this.db.getAll("markers", IDBKeyRange.bound([machine], after(machine)));
  }

  /** Commits a batch of writes in one transaction: either all of it is durable, or none. */
  async flush(batch: FlushBatch): Promise<void> {
    const tx = this.db.transaction(["machines", "branches", "log", "blocks", "markers"], "readwrite");
    const id = batch.machine.id;
    try {
      const blocks = tx.objectStore("blocks");
      for (const b of batch.blocks) void blocks.put(isZeroBlock(b.data) ? ZERO_BLOCK : b.data, [id, b.block, b.branch, b.seq]);
      const log = tx.objectStore("log");
      for (const r of batch.log) void log.put(r, [id, r.seq]);
      const branches = tx.objectStore("branches");
      for (const b of batch.branches) void branches.put(b, [id, b.id]);
      const markers = tx.objectStore("markers");
      for (const m of batch.markers) void markers.put(m, [id, m.seq, m.id]);
      void tx.objectStore("machines").put(batch.machine, id);
      await tx.done;
    } catch (err) {
      rethrowQuota(err, "recent disk writes");
    }
  }

  // ── checkpoints ─────────────────────────────────────────────────────────────────────────────

  /** Hashes of every stored state piece (to skip storing a piece twice). */
  async statePieceHashes(): Promise<Set<string>> {
    return new Set(await this.db.getAllKeys("statePieces"));
  }

  /** Stores a checkpoint and its new pieces in one transaction. */
  async putCheckpoint(record: CheckpointRecord, newPieces: ReadonlyMap<string, Uint8Array>): Promise<void> {
    const tx = this.db.transaction(["checkpoints", "statePieces"], "readwrite");
    try {
      const pieces = tx.objectStore("statePieces");
      for (const [hash, data] of newPieces) void pieces.put(data, hash);
      void tx.objectStore("checkpoints").put(record, [record.machine, record.id]);
      await tx.done;
    } catch (err) {
      rethrowQuota(err, "the checkpoint");
    }
  }

  getCheckpoint(machine: string, id: string): Promise<CheckpointRecord | undefined> {
    return this.db.get("checkpoints", [machine, id]);
  }

  listCheckpoints(machine: string): Promise<CheckpointRecord[]> {
    return this.db.getAll("checkpoints", IDBKeyRange.bound([machine], after(machine)));
  }

  /** The pieces named, in order; throws if one is missing (a damaged store). */
  async statePieces(hashes: readonly string[]): Promise<Uint8Array[]> {
    const tx = this.db.transaction("statePieces");
    const unique = [...new Set(hashes)];
    const found = new Map(await Promise.all(unique.map(async (h) => [h, await tx.store.get(h)] as const)));
    return hashes.map((h) => {
      const piece = found.get(h);
      if (!piece) throw new Error(`checkpoint piece ${h.slice(0, 12)}… is missing from local storage`);
      return piece;
    });
  }

  /** Removes a machine's history (log, versions, branches, markers, checkpoints); the machine record stays. */
  async clearHistory(machine: string): Promise<void> {
    const tx = this.db.transaction(["branches", "log", "blocks", "markers", "checkpoints"], "readwrite");
    const range = IDBKeyRange.bound([machine], after(machine));
    void tx.objectStore("branches").delete(range);
    void tx.objectStore("log").delete(range);
    void tx.objectStore("blocks").delete(range);
    void tx.objectStore("markers").delete(range);
    void tx.objectStore("checkpoints").delete(range);
    await tx.done;
    await this.collectStatePieces();
  }

  /** Deletes state pieces no checkpoint names any more (mark and sweep). */
  async collectStatePieces(): Promise<number> {
    const live = new Set<string>();
    for (const c of await this.db.getAll("checkpoints")) for (const h of c.pieces) live.add(h);
    const tx = this.db.transaction("statePieces", "readwrite");
    let removed = 0;
    for (const hash of await tx.store.getAllKeys()) {
      if (!live.has(hash)) {
        void tx.store.delete(hash);
        removed++;
      }
    }
    await tx.done;
    return removed;
  }

  async deleteMachine(machine: string): Promise<void> {
    await this.clearHistory(machine);
    await this.db.delete("machines", machine);
  }
}
