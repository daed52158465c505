/**
 * A machine's disk: the base image (copy-on-read, ChunkSource) overlaid with the machine's own
 * write log at its current point. Writes are visible at once and reach IndexedDB in batches
 * (see FLUSH_DELAY_MS in store-format.ts for what a crash can lose).
 */
import type { ChunkSource } from "./chunk-source.ts";
import { isZeroBlock, type FlushBatch, type LocalStore } from "./local-store.ts";
import { ByteLru } from "./lru.ts";
import {
  BLOCK_SIZE,
  DATA_RECORD_BLOCKS,
  entryOf,
  FLUSH_BYTES,
  FLUSH_DELAY_MS,
  GROUP_BLOCKS,
  groupOf,
  ZERO_PART,
  type BranchRecord,
  type LogRecord,
  type MachineRecord,
  type MarkerKind,
  type MarkerRecord,
  type Point,
} from "./store-format.ts";
import { ancestry, type Segment } from "./timeline.ts";
import { concatBytes } from "./util.ts";

const SECTOR = 512;
/** Disk idle time after writes that makes a quiet point (an end marker recovery may stop at). */
export const QUIET_AFTER_MS = 2000;
/** Data records kept in memory once read (a file read back reads each record once). */
const DATA_CACHE_BYTES = 32 * 1024 * 1024;
/** Index groups looked up per IndexedDB transaction by changedBlocks. */
const LOOKUP_BATCH = 256;
/** Most index look-ups readAtCached makes at once on its first read at a point (see there). */
export const PRELOAD_LOOKUPS = 1024;
/** The key readAtCached leaves in its caller's `versions` map once it preloaded it. */
const PRELOADED = "preloaded";
/** What a block of zeros reads as (shared: blocks handed out are never modified). */
const ZEROS = new Uint8Array(BLOCK_SIZE);
/** Entries of a group no write on the branch touched yet. */
const NO_ENTRIES = new Uint32Array(3 * GROUP_BLOCKS);

/** The empty root branch every machine starts with. */
export function rootBranch(machine: string, now: number): BranchRecord {
  return { machine, id: 0, parent: null, forkSeq: 0, head: 0, created: now };
}

export class Disk {
  /** Content of written blocks at the current point; null means "the base image's". */
  private readonly resolved = new Map<number, Uint8Array | null>();
  /** Entries of groups on the current branch at the current point (pending writes included). */
  private readonly groupHeads = new Map<number, Uint32Array>();
  /** The data record the next non-zero blocks go to (closed by a flush or when full). */
  private openData: { seq: number; part: number; blocks: Uint8Array[] } | undefined;
  private readonly dataCache = new ByteLru<string>(DATA_CACHE_BYTES);
  private segments: Segment[];
  private pending: FlushBatch;
  private pendingBytes = 0;
  private flushTimer: ReturnType<typeof setTimeout> | undefined;
  private flushing: Promise<void> = Promise.resolve();
  /** Tail of the write chain: reads wait for every write issued before them. */
  private writeTail: Promise<void> = Promise.resolve();
  private quietTimer: ReturnType<typeof setTimeout> | undefined;
  /** Set by a rewind that left a future behind: the next change starts a branch (see seek). */
  private forkPending = false;
  /** Called when a background flush fails (for instance a full quota); the writes stay in memory. */
  onFlushError: (err: unknown) => void = () => undefined;
  /** Called when a quiet point was marked (the timeline has a new point). */
  onQuiet: () => void = () => undefined;

  private constructor(
    private readonly store: LocalStore,
    readonly base: ChunkSource,
    private machine: MachineRecord,
    private readonly branches: Map<number, BranchRecord>,
    /** Groups with a written block on any branch: reads of other groups skip the index entirely. */
    private readonly written: Set<number>,
  ) {
    this.segments = ancestry(branches, machine.now);
    this.pending = this.emptyBatch();
  }

  static async open(store: LocalStore, base: ChunkSource, machine: MachineRecord): Promise<Disk> {
    const list = await store.listBranches(machine.id);
    const branches = new Map(list.map((b) => [b.id, b]));
    if (!branches.has(0)) branches.set(0, rootBranch(machine.id, machine.created));
    const written = await store.writtenGroups(machine.id);
    return new Disk(store, base, machine, branches, written);
  }

  get size(): number {
    return this.base.manifest.size;
  }

  get id(): string {
    return this.machine.id;
  }

  /** Where the guest's disk is now. */
  get now(): Point {
    return { ...this.machine.now };
  }

  get record(): MachineRecord {
    return structuredClone(this.machine);
  }

  /** Reads `length` bytes at `offset` as the guest sees them now. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.checkRange(offset, length);
    await this.writeTail;
    return this.readNow(offset, length);
  }

  /**
   * Applies a guest write; resolves once it is visible (not yet durable: see flush()).
   * `handedOver`: the caller will never touch `data` again (it came across the worker boundary),
   * so it is kept as it is instead of copied.
   */
  write(offset: number, data: Uint8Array, handedOver = false): Promise<void> {
    this.checkRange(offset, data.byteLength);
    // Otherwise copy now: the caller may reuse its buffer before the chain reaches us.
    const own = handedOver ? data : data.slice();
    const done = this.writeTail.then(() => this.applyWrite(offset, own));
    this.writeTail = done.catch(() => undefined);
    return done;
  }

  /** Makes every write issued so far durable. */
  async flush(): Promise<void> {
    await this.writeTail;
    return this.flushNow();
  }

  /** Commits what is pending now (callers inside the write chain use this, not flush()). */
  private flushNow(): Promise<void> {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.closeData();
    // Cut the batch now, with the machine record as of its last write, so what lands is consistent.
    const batch = { ...this.pending, machine: structuredClone(this.machine) };
    batch.branches = batch.branches.map((b) => ({ ...b }));
    this.pending = this.emptyBatch();
    this.pendingBytes = 0;
    const run = this.flushing.then(async () => {
      if (batch.log.length === 0 && batch.markers.length === 0 && batch.branches.length === 0 && batch.data.length === 0) return;
      try {
        await this.store.flush(batch);
      } catch (err) {
        // Keep the batch: put it back in front of anything newer so the next flush retries it.
        this.pending = mergeBatches(batch, this.pending);
        throw err;
      }
    });
    this.flushing = run.catch(() => undefined);
    return run;
  }

  /**
   * The point the disk is at once every write issued before this call has landed, and before any
   * later write: what a machine checkpoint taken right now must record.
   */
  pointNow(): Promise<Point> {
    const point = this.writeTail.then(() => {
      // A checkpoint after a rewind belongs to the new future, not to the branch left behind.
      if (this.forkPending) this.touchBranch(this.fork());
      return { ...this.machine.now };
    });
    this.writeTail = point.then(
      () => undefined,
      () => undefined,
    );
    return point;
  }

  /**
   * Moves the disk to `point` (a rewind, or a switch to another branch). Nothing is deleted: the
   * next write forks a new branch unless `point` is the newest point of its branch. `forkNext`
   * forks even then (and on the next checkpoint too): the machine left behind a future that is
   * not on the disk, such as a later checkpoint at the same point.
   */
  seek(point: Point, forkNext = false): Promise<void> {
    const done = this.writeTail.then(async () => {
      const now = this.machine.now;
      // Already there (resuming the checkpoint at "now"): nothing to store, so no wait behind
      // other IndexedDB writes.
      if (now.branch === point.branch && now.seq === point.seq && !forkNext && !this.forkPending) return;
      const branch = this.branches.get(point.branch);
      if (!branch) throw new RangeError(`no branch ${point.branch} in this machine`);
      if (point.seq > branch.head || point.seq < branch.forkSeq) {
        throw new RangeError(`point ${point.seq} is not on branch ${point.branch} (${branch.forkSeq}..${branch.head})`);
      }
      await this.flushNow();
      this.machine.now = { ...point };
      this.forkPending = forkNext;
      this.segments = ancestry(this.branches, this.machine.now);
      this.resolved.clear();
      this.groupHeads.clear();
      await this.store.putMachine(structuredClone(this.machine));
    });
    this.writeTail = done.catch(() => undefined);
    return done;
  }

  /** Stores the machine's settings (see MachineRecord): they take effect when it is next opened. */
  setSettings(settings: Pick<MachineRecord, "hardware" | "input" | "off">): Promise<void> {
    const done = this.writeTail.then(async () => {
      this.machine = { ...this.machine, ...settings };
      await this.store.putMachine(structuredClone(this.machine));
    });
    this.writeTail = done.catch(() => undefined);
    return done;
  }

  /** Adds an end marker (a consistent point) at the current point. */
  mark(kind: MarkerKind, name?: string): Promise<MarkerRecord> {
    const done = this.writeTail.then(() => {
      const marker: MarkerRecord = {
        machine: this.machine.id,
        seq: this.machine.now.seq,
        branch: this.machine.now.branch,
        id: crypto.randomUUID(),
        kind,
        time: Date.now(),
        ...(name === undefined ? {} : { name }),
      };
      this.pending.markers.push(marker);
      this.scheduleFlush();
      return marker;
    });
    this.writeTail = done.then(
      () => undefined,
      () => undefined,
    );
    return done;
  }

  /** The branch tree as it is now (including writes not flushed yet). */
  branchList(): BranchRecord[] {
    return [...this.branches.values()].map((b) => ({ ...b }));
  }

  /**
   * Runs a sweep (history-sweep.ts) with every write issued so far stored and no other disk
   * operation running. `fn` may take fresh seqs (compacted data is stored under a seq no write
   * has) and drop branches; afterwards the caches are dropped, since a sweep moves and deletes
   * what they point to.
   */
  exclusive<T>(
    fn: (view: {
      /** The machine record as stored with the sweep's changes (after any seqs taken). */
      record: () => MachineRecord;
      branches: BranchRecord[];
      takeSeq: () => number;
      dropBranches: (ids: Iterable<number>) => void;
    }) => Promise<T>,
  ): Promise<T> {
    const done = this.writeTail.then(async () => {
      await this.flushNow();
      try {
        return await fn({
          record: () => structuredClone(this.machine),
          branches: this.branchList(),
          takeSeq: () => ++this.machine.lastSeq,
          dropBranches: (ids) => {
            for (const id of ids) if (id !== this.machine.now.branch) this.branches.delete(id);
          },
        });
      } finally {
        this.resolved.clear();
        this.groupHeads.clear();
        this.dataCache.clear();
        this.segments = ancestry(this.branches, this.machine.now);
      }
    });
    this.writeTail = done.then(
      () => undefined,
      () => undefined,
    );
    return done;
  }

  /** Stops background timers (the machine is closing). */
  close(): void {
    clearTimeout(this.quietTimer);
  }

  /** Discards this machine's history: the disk is the base image again. */
  async reset(): Promise<void> {
    await this.writeTail;
    clearTimeout(this.quietTimer);
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    await this.flushing;
    this.pending = this.emptyBatch();
    this.pendingBytes = 0;
    this.openData = undefined;
    await this.store.clearHistory(this.machine.id);
    const now = Date.now();
    this.branches.clear();
    this.branches.set(0, rootBranch(this.machine.id, now));
    this.written.clear();
    this.resolved.clear();
    this.groupHeads.clear();
    this.dataCache.clear();
    this.machine = { ...this.machine, lastSeq: 0, lastBranch: 0, now: { branch: 0, seq: 0 } };
    this.segments = ancestry(this.branches, this.machine.now);
    await this.store.putMachine(this.machine);
  }

  // ── internals ───────────────────────────────────────────────────────────────────────────────

  private checkRange(offset: number, length: number): void {
    if (offset % SECTOR !== 0 || length % SECTOR !== 0 || offset < 0 || offset + length > this.size) {
      throw new RangeError(`disk access ${offset}+${length} is not sector aligned or outside the ${this.size}-byte disk`);
    }
  }

  /** Reads the disk as it was at `point`, without moving "now" (publishing, export). */
  async readAt(point: Point, offset: number, length: number): Promise<Uint8Array> {
    this.checkRange(offset, length);
    await this.flush();
    return this.readNow(offset, length, ancestry(this.branches, point));
  }

  /** Indexes of base chunks holding a block this machine changed, as seen from `point`. */
  async changedChunks(point: Point): Promise<number[]> {
    await this.flush();
    const segments = ancestry(this.branches, point);
    const per = this.base.chunkSize / BLOCK_SIZE;
    const chunks = new Set<number>();
    for (const group of [...this.written].sort((a, b) => a - b)) {
      const views = await Promise.all(segments.map((s) => this.store.groupVersion(this.machine.id, group, s.branch, s.maxSeq)));
      for (let block = group * GROUP_BLOCKS; block < (group + 1) * GROUP_BLOCKS; block++) {
        if (views.some((v) => v && v[entryOf(block)] !== 0)) chunks.add(Math.floor(block / per));
      }
    }
    return [...chunks];
  }

  /** `sequential`: see ChunkSource.get (false for the file browser's and diff's reads). */
  private async readNow(offset: number, length: number, at?: Segment[], sequential = true): Promise<Uint8Array> {
    const chunkSize = this.base.chunkSize;
    const firstChunk = Math.floor(offset / chunkSize);
    const lastChunk = Math.floor((offset + length - 1) / chunkSize);
    const out = new Uint8Array(length);
    const chunks = await Promise.all(
      Array.from({ length: lastChunk - firstChunk + 1 }, (_, i) => this.base.get(firstChunk + i, sequential)),
    );
    chunks.forEach((chunk, i) => {
      const chunkStart = (firstChunk + i) * chunkSize;
      const from = Math.max(offset, chunkStart);
      const to = Math.min(offset + length, chunkStart + chunk.byteLength);
      out.set(chunk.subarray(from - chunkStart, to - chunkStart), from - offset);
    });
    // Overlay the machine's own blocks visible at this point.
    const firstBlock = Math.floor(offset / BLOCK_SIZE);
    const lastBlock = Math.floor((offset + length - 1) / BLOCK_SIZE);
    for (let block = firstBlock; block <= lastBlock; block++) {
      if (!this.written.has(groupOf(block))) continue;
      const data = at ? await this.blockAt(block, at) : await this.blockNow(block);
      if (!data) continue;
      const blockStart = block * BLOCK_SIZE;
      const from = Math.max(offset, blockStart);
      const to = Math.min(offset + length, blockStart + BLOCK_SIZE);
      out.set(data.subarray(from - blockStart, to - blockStart), from - offset);
    }
    return out;
  }

  /** The machine's version of `block` at the current point, or null for the base image's. */
  private async blockNow(block: number): Promise<Uint8Array | null> {
    const known = this.resolved.get(block);
    if (known !== undefined) return known;
    // Blocks written since the last seek are all in `resolved`, so every entry the current
    // branch's group points to here is stored; its parents' are stored too (a seek flushes).
    const entries = await this.groupHead(groupOf(block));
    let found: Uint8Array | null;
    if (entries[entryOf(block)] !== 0) found = await this.blockContent(entries, block);
    else found = await this.blockAt(block, this.segments.slice(1));
    // A copy: a view would keep its whole 1 MiB data record in memory.
    const held = found === null || found === ZEROS ? found : found.slice();
    this.resolved.set(block, held);
    return held;
  }

  /** The newest stored version of `block` on the given ancestry, or null (flush first). */
  private async blockAt(block: number, segments: Segment[]): Promise<Uint8Array | null> {
    for (const segment of segments) {
      const entries = await this.store.groupVersion(this.machine.id, groupOf(block), segment.branch, segment.maxSeq);
      if (entries && entries[entryOf(block)] !== 0) return this.blockContent(entries, block);
    }
    return null;
  }

  /**
   * Entries of `group` on the current branch at the current point. Not held here means no write
   * touched it since the last seek, so what is stored is current.
   */
  private async groupHead(group: number): Promise<Uint32Array> {
    let entries = this.groupHeads.get(group);
    if (entries) return entries;
    const { branch, seq } = this.machine.now;
    entries = (this.written.has(group) && (await this.store.groupVersion(this.machine.id, group, branch, seq))) || NO_ENTRIES;
    this.groupHeads.set(group, entries);
    return entries;
  }

  /** The block an entry points to: zeros, or a slice of a stored data record. */
  private async blockContent(entries: Uint32Array, block: number): Promise<Uint8Array> {
    const at = entryOf(block);
    const [seq, part, index] = [entries[at]!, entries[at + 1]!, entries[at + 2]!];
    if (part === ZERO_PART) return ZEROS;
    const key = `${seq} ${part}`;
    let record = this.dataCache.get(key);
    if (!record) {
      record = await this.store.dataRecord(this.machine.id, seq, part);
      if (!record || record.byteLength < (index + 1) * BLOCK_SIZE) {
        throw new Error(`disk data of write ${seq} is missing from local storage (block ${block}); the store is damaged`);
      }
      this.dataCache.set(key, record);
    }
    return record.subarray(index * BLOCK_SIZE, (index + 1) * BLOCK_SIZE);
  }

  /** Adds a non-zero block to the open data record; returns its entry. */
  private appendData(seq: number, content: Uint8Array): [number, number, number] {
    let open = this.openData;
    if (!open || open.blocks.length >= DATA_RECORD_BLOCKS) {
      // A write that fills one record goes on in the next part of its own.
      const part = open && open.seq === seq ? open.part + 1 : 0;
      this.closeData();
      open = this.openData = { seq, part, blocks: [] };
    }
    open.blocks.push(content);
    return [open.seq, open.part, open.blocks.length - 1];
  }

  /** Moves the open data record into the pending batch, packed into one array. */
  private closeData(): void {
    const open = this.openData;
    this.openData = undefined;
    if (!open?.blocks.length) return;
    this.pending.data.push({ seq: open.seq, part: open.part, bytes: concatBytes(open.blocks) });
  }

  private async applyWrite(offset: number, data: Uint8Array): Promise<void> {
    const firstBlock = Math.floor(offset / BLOCK_SIZE);
    const lastBlock = Math.floor((offset + data.byteLength - 1) / BLOCK_SIZE);
    const blockCount = lastBlock - firstBlock + 1;
    // Most writes cover whole blocks (ext4 writes 4 KiB blocks): their data is the span as it is.
    const aligned = offset % BLOCK_SIZE === 0 && data.byteLength % BLOCK_SIZE === 0;
    if (aligned) return this.logWrite(offset, data.byteLength, data);
    const span = new Uint8Array(blockCount * BLOCK_SIZE);
    // A write that covers a block partly keeps the rest of that block as it was.
    if (offset % BLOCK_SIZE !== 0) {
      span.set(await this.readNow(firstBlock * BLOCK_SIZE, Math.min(BLOCK_SIZE, this.size - firstBlock * BLOCK_SIZE)));
    }
    const end = offset + data.byteLength;
    if (end % BLOCK_SIZE !== 0 && (lastBlock !== firstBlock || offset % BLOCK_SIZE === 0)) {
      const lastStart = lastBlock * BLOCK_SIZE;
      span.set(await this.readNow(lastStart, Math.min(BLOCK_SIZE, this.size - lastStart)), (blockCount - 1) * BLOCK_SIZE);
    }
    span.set(data, offset - firstBlock * BLOCK_SIZE);
    return this.logWrite(offset, data.byteLength, span);
  }

  /**
   * Logs a guest write of `length` bytes at `offset`; `span` is the whole blocks it touches, as
   * they are after it.
   */
  private async logWrite(offset: number, length: number, span: Uint8Array): Promise<void> {
    const firstBlock = Math.floor(offset / BLOCK_SIZE);
    const blockCount = span.byteLength / BLOCK_SIZE;
    const lastBlock = firstBlock + blockCount - 1;
    const branch = this.branchForWrite();
    const heads = new Map<number, Uint32Array>();
    for (let g = groupOf(firstBlock); g <= groupOf(lastBlock); g++) heads.set(g, (await this.groupHead(g)).slice());
    const seq = ++this.machine.lastSeq;
    const record: LogRecord = {
      machine: this.machine.id,
      seq,
      branch: branch.id,
      time: Date.now(),
      offset,
      length,
      firstBlock,
      blockCount,
    };
    for (let i = 0; i < blockCount; i++) {
      const block = firstBlock + i;
      const content = span.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
      const entries = heads.get(groupOf(block))!;
      // Zeros (a zeroed file, a `dd` from /dev/zero, fresh metadata) store nothing but the entry.
      if (isZeroBlock(content)) {
        entries.set([seq, ZERO_PART, 0], entryOf(block));
        this.resolved.set(block, ZEROS);
      } else {
        entries.set(this.appendData(seq, content), entryOf(block));
        this.resolved.set(block, content);
      }
    }
    for (const [group, entries] of heads) {
      this.pending.groups.push({ group, branch: branch.id, seq, entries });
      this.groupHeads.set(group, entries);
      this.written.add(group);
    }
    this.pending.log.push(record);
    branch.head = seq;
    this.touchBranch(branch);
    this.machine.now = { branch: branch.id, seq };
    this.segments[0] = { branch: branch.id, maxSeq: seq };
    this.pendingBytes += span.byteLength;
    this.scheduleFlush();
    // After a burst of writes, the first idle moment is a consistent point worth marking.
    clearTimeout(this.quietTimer);
    this.quietTimer = setTimeout(
      () =>
        void this.mark("quiet").then(
          () => this.onQuiet(),
          (err: unknown) => this.onFlushError(err),
        ),
      QUIET_AFTER_MS,
    );
  }

  /**
   * The branch a new write goes to: the current one when "now" is its newest point, else a new
   * branch forking at "now" (writing after a rewind never overwrites the other future).
   */
  private branchForWrite(): BranchRecord {
    const now = this.machine.now;
    const current = this.branches.get(now.branch);
    if (!current) throw new Error(`machine is on a missing branch ${now.branch}`);
    if (current.head === now.seq && !this.forkPending) return current;
    return this.fork();
  }

  /** Starts a new branch at "now" and moves there. */
  private fork(): BranchRecord {
    const now = this.machine.now;
    const current = this.branches.get(now.branch)!;
    this.forkPending = false;
    const branch: BranchRecord = {
      machine: this.machine.id,
      id: ++this.machine.lastBranch,
      parent: current.id,
      forkSeq: now.seq,
      head: now.seq,
      created: Date.now(),
    };
    this.branches.set(branch.id, branch);
    this.machine.now = { branch: branch.id, seq: now.seq };
    this.segments = ancestry(this.branches, this.machine.now);
    this.groupHeads.clear(); // the new branch has no writes of its own yet
    return branch;
  }

  private touchBranch(branch: BranchRecord): void {
    const list = this.pending.branches;
    const i = list.findIndex((b) => b.id === branch.id);
    if (i >= 0) list[i] = branch;
    else list.push(branch);
  }

  private scheduleFlush(): void {
    if (this.pendingBytes >= FLUSH_BYTES) {
      void this.flush().catch((err) => this.onFlushError(err));
    } else if (this.flushTimer === undefined) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined;
        void this.flush().catch((err) => this.onFlushError(err));
      }, FLUSH_DELAY_MS);
    }
  }

  private emptyBatch(): FlushBatch {
    return { machine: this.machine, branches: [], log: [], groups: [], data: [], markers: [] as MarkerRecord[] };
  }

  /**
   * Blocks (BLOCK_SIZE each, ascending) whose content may differ between two points, any two,
   * across branches (the file diff, ext4/diff.ts): a block is listed when the timeline index
   * entry visible at `a` differs from the one visible at `b` (no entry: the base image's block).
   * The same entry is the same content; different entries may still hold equal bytes (a block
   * written back unchanged), so this is a superset that readers confirm. Segments the two
   * ancestries share are looked up only for groups a differing segment wrote.
   */
  async changedBlocks(a: Point, b: Point): Promise<number[]> {
    await this.flush();
    const key = (s: Segment) => `${s.branch}:${s.maxSeq}`;
    const [sa, sb] = [ancestry(this.branches, a), ancestry(this.branches, b)];
    const shared = new Set(sa.map(key).filter((k) => sb.some((s) => key(s) === k)));
    const own = [sa, sb].map((list) => list.filter((s) => !shared.has(key(s))));
    const common = sa.filter((s) => shared.has(key(s)));
    const [ownA, ownB] = own as [Segment[], Segment[]];
    const lookUp = (groups: number[], segments: Segment[]) =>
      this.store.groupVersions(
        this.machine.id,
        groups.flatMap((group) => segments.map((s) => ({ group, branch: s.branch, maxSeq: s.maxSeq }))),
      );
    const groups = [...this.written].sort((x, y) => x - y);
    const changed: number[] = [];
    // Look-ups in batches, each one transaction (see LocalStore.groupVersions).
    for (let i = 0; i < groups.length; i += LOOKUP_BATCH) {
      const slice = groups.slice(i, i + LOOKUP_BATCH);
      const mineAll = await lookUp(slice, [...ownA, ...ownB]);
      const per = ownA.length + ownB.length;
      const touched = slice.map((group, k) => ({ group, mine: mineAll.slice(k * per, (k + 1) * per) })).filter((t) => t.mine.some((v) => v));
      const baseAll = await lookUp(
        touched.map((t) => t.group),
        common,
      );
      touched.forEach(({ group, mine }, k) => {
        const base = baseAll.slice(k * common.length, (k + 1) * common.length);
        const va = [...mine.slice(0, ownA.length), ...base];
        const vb = [...mine.slice(ownA.length), ...base];
        for (let block = group * GROUP_BLOCKS; block < (group + 1) * GROUP_BLOCKS; block++) {
          const at = entryOf(block);
          const ea = va.find((v) => v && v[at] !== 0);
          const eb = vb.find((v) => v && v[at] !== 0);
          if (ea === eb && ea === undefined) continue;
          if (!ea || !eb || ea[at] !== eb[at] || ea[at + 1] !== eb[at + 1] || ea[at + 2] !== eb[at + 2]) changed.push(block);
        }
      });
    }
    return changed;
  }

  /**
   * readAt for the file browser and the file diff (ext4/files.ts), which read inode tables and
   * directories in runs: the timeline index is looked up once per group and segment (readAt asks
   * once per block), and the answers are kept in `versions`, the caller's map for as long as it
   * reads this point (a point's index entries do not change; drop the map after a sweep).
   */
  async readAtCached(point: Point, offset: number, length: number, versions: Map<string, Uint32Array | null>): Promise<Uint8Array> {
    this.checkRange(offset, length);
    // What the point holds must be stored; a flush with nothing pending still costs a batch.
    await this.writeTail;
    const p = this.pending;
    if (this.openData || p.log.length || p.groups.length || p.data.length || p.markers.length || p.branches.length) await this.flushNow();
    await this.flushing;
    const segments = ancestry(this.branches, point);
    // No prefetch: the reader asks for whole runs at once, and jumps (a diff's first reads
    // fetched ~3 times the chunks it needed when every two-chunk run set off a prefetch).
    const base = this.readNow(offset, length, [], false);
    const firstBlock = Math.floor(offset / BLOCK_SIZE);
    const lastBlock = Math.floor((offset + length - 1) / BLOCK_SIZE);
    const keyOf = (group: number, s: Segment) => `${group}:${s.branch}:${s.maxSeq}`;
    // Index look-ups this read needs and `versions` lacks, for all its groups at once. The first
    // read at a point looks up every written group (when they are few): a file system's reads
    // scatter over the disk, and one transaction of all costs about what two single ones do.
    const missing: { group: number; branch: number; maxSeq: number; key: string }[] = [];
    const preload = versions.size === 0 && this.written.size * segments.length <= PRELOAD_LOOKUPS;
    if (preload) versions.set(PRELOADED, null);
    const groups = preload ? [...this.written] : Array.from({ length: groupOf(lastBlock) - groupOf(firstBlock) + 1 }, (_, i) => groupOf(firstBlock) + i);
    const asked = new Set<string>();
    for (const group of groups) {
      if (!this.written.has(group)) continue;
      for (const s of segments) {
        const key = keyOf(group, s);
        if (versions.has(key) || asked.has(key)) continue;
        asked.add(key);
        missing.push({ group, branch: s.branch, maxSeq: s.maxSeq, key });
      }
    }
    // The base image's bytes and the index entries are fetched side by side (a diff's reads
    // follow one another, so each one's latency counts).
    const [out, found] = await Promise.all([base, this.store.groupVersions(this.machine.id, missing)]);
    missing.forEach((m, i) => versions.set(m.key, found[i] ?? null));
    for (let group = groupOf(firstBlock); group <= groupOf(lastBlock); group++) {
      if (!this.written.has(group)) continue;
      const views = segments.map((s) => versions.get(keyOf(group, s))!);
      const last = Math.min(lastBlock, (group + 1) * GROUP_BLOCKS - 1);
      for (let block = Math.max(firstBlock, group * GROUP_BLOCKS); block <= last; block++) {
        const entries = views.find((v) => v && v[entryOf(block)] !== 0);
        if (!entries) continue;
        const data = await this.blockContent(entries, block);
        const blockStart = block * BLOCK_SIZE;
        const from = Math.max(offset, blockStart);
        const to = Math.min(offset + length, blockStart + BLOCK_SIZE);
        out.set(data.subarray(from - blockStart, to - blockStart), from - offset);
      }
    }
    return out;
  }
}

function mergeBatches(older: FlushBatch, newer: FlushBatch): FlushBatch {
  const branches = new Map(older.branches.map((b) => [b.id, b]));
  for (const b of newer.branches) branches.set(b.id, b);
  return {
    machine: newer.machine,
    branches: [...branches.values()],
    log: [...older.log, ...newer.log],
    groups: [...older.groups, ...newer.groups],
    data: [...older.data, ...newer.data],
    markers: [...older.markers, ...newer.markers],
  };
}
