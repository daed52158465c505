/**
 * Typed access to the local IndexedDB store (layout and version: store-format.ts).
 * Knows nothing of disks or timelines: each method is one well-defined read or transaction.
 */
import { openDB, type IDBPDatabase, type IDBPTransaction } from "idb";
import { encodeRefs, PackBuilder, packFrom, type Place } from "./checkpoint-format.ts";
import { concatBytes } from "./util.ts";
import {
  DB_NAME,
  entryOf,
  GROUP_BLOCKS,
  groupOf,
  ZERO_PART,
  STORE_VERSION,
  type BranchRecord,
  type CheckpointRecord,
  type ChunkMeta,
  type PackInfo,
  type StatePack,
  type LogRecord,
  type MachineRecord,
  type ManifestRecord,
  type MarkerRecord,
  type SandglassDB,
} from "./store-format.ts";

/** A `groups` record: where each block of a group stands on a branch after a write (store-format.ts). */
export interface GroupVersion {
  group: number;
  branch: number;
  seq: number;
  entries: Uint32Array;
}

/** A `data` record: packed block contents (store-format.ts). */
export interface DataRecord {
  seq: number;
  part: number;
  bytes: Uint8Array;
}

/** Everything one flush commits atomically. */
export interface FlushBatch {
  machine: MachineRecord;
  branches: BranchRecord[];
  log: LogRecord[];
  groups: GroupVersion[];
  data: DataRecord[];
  markers: MarkerRecord[];
}

/** Upper bound for array keys that start with `prefix` (arrays sort after every other key type). */
const after = (...prefix: (string | number)[]) => [...prefix, []];

/** True when every byte is zero (four bytes at a time: ~30 ms for 64 MiB). */
export function isZeroBlock(data: Uint8Array): boolean {
  if (data.byteOffset % 4 !== 0 || data.byteLength % 4 !== 0) return data.every((b) => b === 0);
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
      upgrade(db, oldVersion, _newVersion, tx) {
        // One step per version, from the store's version up (store-format.ts says what each is).
        if (oldVersion < 1) {
          db.createObjectStore("chunks");
          db.createObjectStore("manifests");
          db.createObjectStore("machines");
          db.createObjectStore("branches");
          db.createObjectStore("log");
          db.createObjectStore("markers");
          db.createObjectStore("checkpoints");
        }
        // Versions 1 and 2 kept one record per block version in `blocks` (2: zeros as an empty
        // value) and one per checkpoint piece in `statePieces`: both are rewritten below.
        if (oldVersion < 3) {
          db.createObjectStore("groups");
          db.createObjectStore("data");
          db.createObjectStore("statePacks");
        }
        // Version 4 only adds StatePack.deflated: version 3 packs read as they are.
        // Version 5 adds images read from a URL: nothing older to rewrite.
        if (oldVersion < 5) db.createObjectStore("remotePins");
        if (oldVersion < 6) {
          db.createObjectStore("chunkMeta");
          db.createObjectStore("dataInfo");
          db.createObjectStore("packInfo");
          db.createObjectStore("settings");
        }
        // One after another: each step reads what the one before wrote (all in this transaction).
        const legacy = tx as unknown as LegacyTransaction;
        void (async () => {
          if (oldVersion >= 1 && oldVersion < 3) {
            await migrateBlockVersions(legacy);
            await migrateStatePieces(legacy);
          }
          if (oldVersion >= 1 && oldVersion < 6) await backfillInfo(legacy);
        })();
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
    const tx = this.db.transaction(["chunks", "chunkMeta"], "readwrite");
    try {
      void tx.objectStore("chunks").put(data, hash);
      void tx.objectStore("chunkMeta").put({ bytes: data.byteLength, used: Date.now() }, hash);
      await tx.done;
    } catch (err) {
      rethrowQuota(err, "a disk chunk");
    }
  }

  /** Which of `hashes` are stored (one transaction). */
  async hasChunks(hashes: readonly string[]): Promise<boolean[]> {
    const tx = this.db.transaction("chunks");
    const keys = await Promise.all(hashes.map((h) => tx.store.getKey(h)));
    return keys.map((k) => k !== undefined);
  }

  /** Stores chunks in one transaction: all of them, or none. */
  async putChunks(chunks: ReadonlyMap<string, Uint8Array>): Promise<void> {
    const tx = this.db.transaction(["chunks", "chunkMeta"], "readwrite");
    const used = Date.now();
    try {
      for (const [hash, data] of chunks) {
        void tx.objectStore("chunks").put(data, hash);
        void tx.objectStore("chunkMeta").put({ bytes: data.byteLength, used }, hash);
      }
      await tx.done;
    } catch (err) {
      rethrowQuota(err, "the image's data");
    }
  }

  async deleteChunks(hashes: Iterable<string>): Promise<void> {
    const tx = this.db.transaction(["chunks", "chunkMeta"], "readwrite");
    for (const hash of hashes) {
      void tx.objectStore("chunks").delete(hash);
      void tx.objectStore("chunkMeta").delete(hash);
    }
    await tx.done;
  }

  /** Size and last use of every stored chunk (small records: the image cache's LRU order). */
  async chunkMetas(): Promise<Map<string, ChunkMeta>> {
    const tx = this.db.transaction("chunkMeta");
    const [keys, values] = await Promise.all([tx.store.getAllKeys(), tx.store.getAll()]);
    return new Map(keys.map((k, i) => [k, values[i]!]));
  }

  /** Marks chunks as read at `time` (LRU order); unknown hashes are skipped. */
  async touchChunks(hashes: Iterable<string>, time: number): Promise<void> {
    const tx = this.db.transaction("chunkMeta", "readwrite");
    await Promise.all(
      [...hashes].map(async (hash) => {
        const meta = await tx.store.get(hash);
        if (meta && meta.used < time) await tx.store.put({ ...meta, used: time }, hash);
      }),
    );
    await tx.done;
  }

  /** Every stored manifest (small: one per image or snapshot ever opened here). */
  listAllManifests(): Promise<ManifestRecord[]> {
    return this.db.getAll("manifests");
  }

  /** Every chunk hash pinned by an image read from a URL (never evicted: the file may change). */
  async pinnedHashes(): Promise<Set<string>> {
    return new Set((await this.db.getAll("remotePins")).filter((h) => h !== ""));
  }

  /** Manifests kept under URLs starting with `prefix` (a repository's). */
  listManifests(prefix: string): Promise<ManifestRecord[]> {
    return this.db.getAll("manifests", IDBKeyRange.bound(prefix, `${prefix}\uffff`));
  }

  /** Deletes a manifest, and the pins of an image read from a URL kept under it. */
  async deleteManifest(url: string): Promise<void> {
    const tx = this.db.transaction(["manifests", "remotePins"], "readwrite");
    void tx.objectStore("manifests").delete(url);
    void tx.objectStore("remotePins").delete(IDBKeyRange.bound([url], after(url)));
    await tx.done;
  }

  // ── images read from a URL (store-format.ts) ────────────────────────────────────────────────

  /** The chunks of a URL image pinned so far: index → SHA-256 hex, or null for an all-zero chunk. */
  async listPins(url: string): Promise<Map<number, string | null>> {
    const range = IDBKeyRange.bound([url], after(url));
    const tx = this.db.transaction("remotePins");
    const [keys, values] = await Promise.all([tx.store.getAllKeys(range), tx.store.getAll(range)]);
    return new Map(keys.map((k, i) => [k[1], values[i] || null]));
  }

  /** Pins chunk `index` of a URL image, with its content (none for zeros), in one transaction. */
  pinChunk(url: string, index: number, hash: string | null, data: Uint8Array | null): Promise<void> {
    return this.pinChunks(url, [{ index, hash, data }]);
  }

  /** Several chunks of a URL image at once (pinChunk), in one transaction. */
  async pinChunks(url: string, chunks: readonly { index: number; hash: string | null; data: Uint8Array | null }[]): Promise<void> {
    const tx = this.db.transaction(["chunks", "chunkMeta", "remotePins"], "readwrite");
    const used = Date.now();
    try {
      for (const { index, hash, data } of chunks) {
        if (hash && data) {
          void tx.objectStore("chunks").put(data, hash);
          void tx.objectStore("chunkMeta").put({ bytes: data.byteLength, used }, hash);
        }
        void tx.objectStore("remotePins").put(hash ?? "", [url, index]);
      }
      await tx.done;
    } catch (err) {
      rethrowQuota(err, "a block of the image");
    }
  }

  /** Stores a snapshot from a `.sandglass` file, its chunks and its manifest, in one transaction. */
  async putBundle(contents: ReadonlyMap<string, Uint8Array>, record: ManifestRecord): Promise<void> {
    const tx = this.db.transaction(["chunks", "chunkMeta", "manifests"], "readwrite");
    const used = Date.now();
    try {
      for (const [hash, data] of contents) {
        void tx.objectStore("chunks").put(data, hash);
        void tx.objectStore("chunkMeta").put({ bytes: data.byteLength, used }, hash);
      }
      void tx.objectStore("manifests").put(record, record.url);
      await tx.done;
    } catch (err) {
      rethrowQuota(err, "the snapshot from the file");
    }
  }

  getManifest(url: string): Promise<ManifestRecord | undefined> {
    return this.db.get("manifests", url);
  }

  async putManifest(record: ManifestRecord): Promise<void> {
    await this.db.put("manifests", record, record.url);
  }

  // ── settings ────────────────────────────────────────────────────────────────────────────────

  async getSetting<T>(name: string): Promise<T | undefined> {
    return (await this.db.get("settings", name)) as T | undefined;
  }

  async putSetting(name: string, value: unknown): Promise<void> {
    await this.db.put("settings", value, name);
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

  /** Every group with at least one written block on any branch (keys only: cheap). */
  async writtenGroups(machine: string): Promise<Set<number>> {
    const keys = await this.db.getAllKeys("groups", IDBKeyRange.bound([machine], after(machine)));
    return new Set(keys.map((k) => k[1]));
  }

  /**
   * The entries of `group` on `branch` as of its newest write at or before `maxSeq`: one reverse
   * cursor step, so lookups cost the same whatever the length of history.
   */
  async groupVersion(machine: string, group: number, branch: number, maxSeq: number): Promise<Uint32Array | undefined> {
    return (await this.groupVersions(machine, [{ group, branch, maxSeq }]))[0];
  }

  /**
   * groupVersion of several (group, branch, maxSeq) at once, in one transaction: Chromium pays a
   * round trip to its storage process per transaction, so a diff's hundreds of look-ups issued
   * one by one cost ~1–3 ms each on a busy machine.
   */
  async groupVersions(machine: string, queries: readonly { group: number; branch: number; maxSeq: number }[]): Promise<(Uint32Array | undefined)[]> {
    if (queries.length === 0) return [];
    const store = this.db.transaction("groups").store;
    return Promise.all(
      queries.map(async ({ group, branch, maxSeq }) => {
        const cursor = await store.openCursor(IDBKeyRange.bound([machine, group, branch, 0], [machine, group, branch, maxSeq]), "prev");
        return cursor?.value;
      }),
    );
  }

  /** A packed data record (see store-format.ts, `data`). */
  dataRecord(machine: string, seq: number, part: number): Promise<Uint8Array | undefined> {
    return this.db.get("data", [machine, seq, part]);
  }

  listLog(machine: string, fromSeq = 0, limit?: number): Promise<LogRecord[]> {
    return this.db.getAll("log", IDBKeyRange.bound([machine, fromSeq], after(machine)), limit);
  }

  listMarkers(machine: string): Promise<MarkerRecord[]> {
    return this.db.getAll("markers", IDBKeyRange.bound([machine], after(machine)));
  }

  /** Commits a batch of writes in one transaction: either all of it is durable, or none. */
  async flush(batch: FlushBatch): Promise<void> {
    const tx = this.db.transaction(["machines", "branches", "log", "groups", "data", "dataInfo", "markers"], "readwrite");
    const id = batch.machine.id;
    try {
      const data = tx.objectStore("data");
      const info = tx.objectStore("dataInfo");
      for (const d of batch.data) {
        void data.put(d.bytes, [id, d.seq, d.part]);
        void info.put(d.bytes.byteLength, [id, d.seq, d.part]);
      }
      const groups = tx.objectStore("groups");
      for (const g of batch.groups) void groups.put(g.entries, [id, g.group, g.branch, g.seq]);
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

  /** The highest pack number the machine has stored, or -1. */
  async lastPack(machine: string): Promise<number> {
    const range = IDBKeyRange.bound([machine], after(machine));
    const cursor = await this.db.transaction("statePacks").store.openKeyCursor(range, "prev");
    return cursor ? cursor.key[1] : -1;
  }

  /** Stores a checkpoint and the packs of its new pieces in one transaction. */
  async putCheckpoint(record: CheckpointRecord, packs: ReadonlyMap<number, StatePack>): Promise<void> {
    const tx = this.db.transaction(["checkpoints", "statePacks", "packInfo"], "readwrite");
    try {
      const store = tx.objectStore("statePacks");
      const info = tx.objectStore("packInfo");
      for (const [n, pack] of packs) {
        void store.put(pack, [record.machine, n]);
        void info.put(packInfoOf(pack), [record.machine, n]);
      }
      void tx.objectStore("checkpoints").put(record, [record.machine, record.id]);
      await tx.done;
    } catch (err) {
      rethrowQuota(err, "the checkpoint");
    }
  }

  /** Rewrites a checkpoint's record alone (its packs are stored already). */
  async putCheckpointRecord(record: CheckpointRecord): Promise<void> {
    try {
      await this.db.put("checkpoints", record, [record.machine, record.id]);
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

  /** The packs named (one transaction); throws if one is missing (a damaged store). */
  async statePacks(machine: string, numbers: readonly number[]): Promise<Map<number, StatePack>> {
    const tx = this.db.transaction("statePacks");
    const got = await Promise.all(numbers.map((n) => tx.store.get([machine, n])));
    return new Map(
      numbers.map((n, i) => {
        const pack = got[i];
        if (!pack) throw new Error(`checkpoint data (pack ${n}) is missing from local storage; the store is damaged`);
        return [n, pack];
      }),
    );
  }

  /** Removes a machine's history (log, versions, branches, markers, checkpoints); the machine record stays. */
  async clearHistory(machine: string): Promise<void> {
    const tx = this.db.transaction(HISTORY_STORES, "readwrite");
    clearHistoryIn(tx, machine);
    await tx.done;
  }

  /** Deletes a machine and its whole history in one transaction: a crash leaves all of it or none. */
  async deleteMachine(machine: string): Promise<void> {
    const tx = this.db.transaction([...HISTORY_STORES, "machines"], "readwrite");
    clearHistoryIn(tx, machine);
    void tx.objectStore("machines").delete(machine);
    await tx.done;
  }

  // ── thinning and storage accounting (history-sweep.ts) ──────────────────────────────────────

  /** Keys of every `groups` record of a machine (no values: cheap). */
  groupKeys(machine: string): Promise<[string, number, number, number][]> {
    return this.db.getAllKeys("groups", IDBKeyRange.bound([machine], after(machine)));
  }

  /** The entries of the given `groups` records, in order (one transaction). */
  async groupValues(keys: readonly [string, number, number, number][]): Promise<Uint32Array[]> {
    const tx = this.db.transaction("groups");
    const values = await Promise.all(keys.map((k) => tx.store.get(k)));
    return values.map((v, i) => {
      if (!v) throw new Error(`disk index record ${keys[i]!.join("/")} vanished during a sweep`);
      return v;
    });
  }

  /** Seqs of every `log` record of a machine. */
  async logSeqs(machine: string): Promise<number[]> {
    return (await this.db.getAllKeys("log", IDBKeyRange.bound([machine], after(machine)))).map((k) => k[1]);
  }

  /** Every `data` record of a machine with its size (from `dataInfo`). */
  async dataSizes(machine: string): Promise<Map<string, number>> {
    const range = IDBKeyRange.bound([machine], after(machine));
    const tx = this.db.transaction("dataInfo");
    const [keys, sizes] = await Promise.all([tx.store.getAllKeys(range), tx.store.getAll(range)]);
    return new Map(keys.map((k, i) => [`${k[1]} ${k[2]}`, sizes[i]!]));
  }

  /** Every pack of a machine with its pieces and size (from `packInfo`). */
  async packInfos(machine: string): Promise<Map<number, PackInfo>> {
    const range = IDBKeyRange.bound([machine], after(machine));
    const tx = this.db.transaction("packInfo");
    const [keys, infos] = await Promise.all([tx.store.getAllKeys(range), tx.store.getAll(range)]);
    return new Map(keys.map((k, i) => [k[1], infos[i]!]));
  }

  /** How many `log` and `groups` records a machine has (their count is their cost: small records). */
  async indexCounts(machine: string): Promise<{ log: number; groups: number; markers: number }> {
    const range = IDBKeyRange.bound([machine], after(machine));
    const tx = this.db.transaction(["log", "groups", "markers"]);
    const [log, groups, markers] = await Promise.all([
      tx.objectStore("log").count(range),
      tx.objectStore("groups").count(range),
      tx.objectStore("markers").count(range),
    ]);
    return { log, groups, markers };
  }

  /** Reads `data` records by [seq, part] (for compaction). */
  async dataRecords(machine: string, keys: readonly [number, number][]): Promise<Uint8Array[]> {
    const tx = this.db.transaction("data");
    const values = await Promise.all(keys.map(([seq, part]) => tx.store.get([machine, seq, part])));
    return values.map((v, i) => {
      if (!v) throw new Error(`disk data of write ${keys[i]![0]} is missing from local storage; the store is damaged`);
      return v;
    });
  }

  /** Applies a sweep (history-sweep.ts) in one transaction: what it deletes and rewrites lands together. */
  async commitSweep(machine: string, change: SweepChange): Promise<void> {
    const stores = ["groups", "log", "data", "dataInfo", "markers", "checkpoints", "statePacks", "packInfo", "branches", "machines"] as const;
    const tx = this.db.transaction([...stores], "readwrite");
    try {
      const groups = tx.objectStore("groups");
      for (const k of change.deleteGroups ?? []) void groups.delete(k);
      for (const g of change.putGroups ?? []) void groups.put(g.entries, [machine, g.group, g.branch, g.seq]);
      const log = tx.objectStore("log");
      for (const seq of change.deleteLog ?? []) void log.delete([machine, seq]);
      const data = tx.objectStore("data");
      const dataInfo = tx.objectStore("dataInfo");
      for (const d of change.putData ?? []) {
        void data.put(d.bytes, [machine, d.seq, d.part]);
        void dataInfo.put(d.bytes.byteLength, [machine, d.seq, d.part]);
      }
      for (const [seq, part] of change.deleteData ?? []) {
        void data.delete([machine, seq, part]);
        void dataInfo.delete([machine, seq, part]);
      }
      const markers = tx.objectStore("markers");
      for (const m of change.deleteMarkers ?? []) void markers.delete([machine, m.seq, m.id]);
      const checkpoints = tx.objectStore("checkpoints");
      for (const id of change.deleteCheckpoints ?? []) void checkpoints.delete([machine, id]);
      for (const c of change.putCheckpoints ?? []) void checkpoints.put(c, [machine, c.id]);
      const packs = tx.objectStore("statePacks");
      const packInfo = tx.objectStore("packInfo");
      for (const [n, pack] of change.putPacks ?? []) {
        void packs.put(pack, [machine, n]);
        void packInfo.put(packInfoOf(pack), [machine, n]);
      }
      for (const n of change.deletePacks ?? []) {
        void packs.delete([machine, n]);
        void packInfo.delete([machine, n]);
      }
      const branches = tx.objectStore("branches");
      for (const id of change.deleteBranches ?? []) void branches.delete([machine, id]);
      if (change.machine) void tx.objectStore("machines").put(change.machine, machine);
      await tx.done;
    } catch (err) {
      rethrowQuota(err, "the thinned history");
    }
  }
}

/** What one sweep transaction deletes and (for compaction) rewrites. */
export interface SweepChange {
  deleteGroups?: [string, number, number, number][];
  putGroups?: GroupVersion[];
  deleteLog?: number[];
  deleteData?: [number, number][];
  putData?: DataRecord[];
  deleteMarkers?: Pick<MarkerRecord, "seq" | "id">[];
  deleteCheckpoints?: string[];
  putCheckpoints?: CheckpointRecord[];
  deletePacks?: number[];
  putPacks?: [number, StatePack][];
  deleteBranches?: number[];
  /** The machine record, when the sweep consumed a seq (compacted data) or moved branches. */
  machine?: MachineRecord;
}

/** Every store holding a machine's history (keys start with the machine id). */
const HISTORY_STORES = ["branches", "log", "groups", "data", "dataInfo", "markers", "checkpoints", "statePacks", "packInfo"] as const;

function clearHistoryIn(tx: IDBPTransaction<SandglassDB, (typeof HISTORY_STORES)[number][] | ((typeof HISTORY_STORES)[number] | "machines")[], "readwrite">, machine: string): void {
  const range = IDBKeyRange.bound([machine], after(machine));
  for (const name of HISTORY_STORES) void tx.objectStore(name).delete(range);
}

/** The `packInfo` record of a pack. */
function packInfoOf(pack: StatePack): PackInfo {
  return { pieces: pack.ends.length, bytes: pack.bytes.byteLength + pack.ends.byteLength };
}

/**
 * Version 6 keeps sizes beside `chunks`, `data` and `statePacks` records: fills them from what is
 * stored (one cursor pass each, inside the upgrade transaction: all of it lands, or none).
 */
async function backfillInfo(tx: LegacyTransaction): Promise<void> {
  const meta = tx.objectStore("chunkMeta");
  for (let c = await tx.objectStore("chunks").openCursor(); c; c = await c.continue()) {
    void meta.put({ bytes: (c.value as Uint8Array).byteLength, used: 0 }, c.key);
  }
  const dataInfo = tx.objectStore("dataInfo");
  for (let c = await tx.objectStore("data").openCursor(); c; c = await c.continue()) {
    void dataInfo.put((c.value as Uint8Array).byteLength, c.key);
  }
  const packInfo = tx.objectStore("packInfo");
  for (let c = await tx.objectStore("statePacks").openCursor(); c; c = await c.continue()) {
    void packInfo.put(packInfoOf(c.value as StatePack), c.key);
  }
}

// ── migration from store versions 1 and 2 ───────────────────────────────────────────────────────

/** The upgrade transaction, seen with the stores of every version (`blocks` is gone from the schema). */
type LegacyTransaction = IDBPTransaction<unknown, string[], "versionchange">;

interface LegacyVersion {
  block: number;
  branch: number;
  seq: number;
  data: Uint8Array;
}

/**
 * Rewrites versions 1–2's `blocks` (one record per block version) as `groups` and `data`, then drops
 * it. The old store's key order visits one group's versions together, so only one group is held
 * in memory at a time. Runs inside the upgrade transaction: all of it lands, or none.
 */
async function migrateBlockVersions(tx: LegacyTransaction): Promise<void> {
  const groups = tx.objectStore("groups");
  const data = tx.objectStore("data");
  /** Parts already used per `${machine} ${seq}` (one write may span several groups). */
  const parts = new Map<string, number>();
  const emit = (machine: string, group: number, versions: LegacyVersion[]) => {
    const branches = new Map<number, LegacyVersion[]>();
    for (const v of versions) branches.set(v.branch, [...(branches.get(v.branch) ?? []), v]);
    for (const [branch, list] of branches) {
      list.sort((a, b) => a.seq - b.seq);
      const entries = new Uint32Array(3 * GROUP_BLOCKS);
      for (let i = 0; i < list.length; ) {
        const seq = list[i]!.seq;
        const same: LegacyVersion[] = [];
        while (i < list.length && list[i]!.seq === seq) same.push(list[i++]!);
        const stored = same.filter((v) => v.data.byteLength > 0 && !isZeroBlock(v.data));
        const key = `${machine} ${seq}`;
        const part = parts.get(key) ?? 0;
        if (stored.length) {
          parts.set(key, part + 1);
          void data.put(concatBytes(stored.map((v) => v.data)), [machine, seq, part]);
        }
        for (const v of same) {
          const k = stored.indexOf(v);
          entries.set(k < 0 ? [seq, ZERO_PART, 0] : [seq, part, k], entryOf(v.block));
        }
        void groups.put(entries.slice(), [machine, group, branch, seq]);
      }
    }
  };
  let current: { machine: string; group: number; versions: LegacyVersion[] } | undefined;
  let cursor = await tx.objectStore("blocks").openCursor();
  while (cursor) {
    const [machine, block, branch, seq] = cursor.key as [string, number, number, number];
    const group = groupOf(block);
    if (!current || current.machine !== machine || current.group !== group) {
      if (current) emit(current.machine, current.group, current.versions);
      current = { machine, group, versions: [] };
    }
    current.versions.push({ block, branch, seq, data: cursor.value as Uint8Array });
    cursor = await cursor.continue();
  }
  if (current) emit(current.machine, current.group, current.versions);
  tx.db.deleteObjectStore("blocks");
}

/**
 * Rewrites versions 1–2's checkpoints (pieces in `statePieces` by SHA-256, shared by all machines,
 * each record listing its hashes) as per-machine packs and compact piece lists, then drops
 * `statePieces`. Each machine's checkpoints are visited oldest first, so a pack holds pieces in
 * the order they first appeared, as saving does. A checkpoint whose piece is missing (a damaged
 * store) could never be restored: it is dropped, the rest of the machine's history stays.
 */
async function migrateStatePieces(tx: LegacyTransaction): Promise<void> {
  const checkpoints = tx.objectStore("checkpoints");
  const pieces = tx.objectStore("statePieces");
  const packs = tx.objectStore("statePacks");
  type Legacy = Omit<CheckpointRecord, "refs" | "pieceCount"> & { pieces: string[] };
  const records = (await checkpoints.getAll()) as Legacy[];
  const byMachine = new Map<string, Legacy[]>();
  for (const r of records) byMachine.set(r.machine, [...(byMachine.get(r.machine) ?? []), r]);
  for (const [machine, list] of byMachine) {
    list.sort((a, b) => a.time - b.time);
    const placed = new Map<string, Place>();
    const builder = new PackBuilder(0, (n, list) => void packs.put(packFrom(list), [machine, n]));
    for (const { pieces: hashes, ...rest } of list) {
      const refs = new Uint32Array(2 * hashes.length);
      let damaged = false;
      for (const [i, hash] of hashes.entries()) {
        let at = placed.get(hash);
        if (!at) {
          const piece = (await pieces.get(hash)) as Uint8Array | undefined;
          if (!piece) {
            damaged = true;
            break;
          }
          at = builder.add(piece);
          placed.set(hash, at);
        }
        refs.set(at, 2 * i);
      }
      if (damaged) void checkpoints.delete([machine, rest.id]);
      else void checkpoints.put({ ...rest, pieceCount: hashes.length, refs: encodeRefs(refs) }, [machine, rest.id]);
    }
    builder.close();
  }
  tx.db.deleteObjectStore("statePieces");
}
