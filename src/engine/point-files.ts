/**
 * Files at a point, as the disk worker serves them (issue 14): the guest's ext2/3/4 file system
 * opened at any timeline point of the open machine (ext4/files.ts reads it), what changed between
 * two points, a directory, a file's bytes, a folder as a zip; and the checkpoints a "Download as
 * file" with history carries (bundle format version 2). DiskService delegates its "files at a
 * point" section here. Plain TypeScript, no worker or page knowledge.
 *
 * Opened points are kept (the last OPEN_POINTS): opening replays the journal, and a person
 * browsing or diffing comes back to the same points. An opened point caches where the timeline
 * keeps its blocks (pointDevice), so the cache must be dropped (forget()) whenever stored history
 * is rewritten: thinning, a deleted branch, a reset to the image.
 */
import type { Checkpoints } from "./checkpoints.ts";
import type { Disk } from "./disk.ts";
import { encodePoints, type BundlePoint, type PointLabel } from "./bundle.ts";
import {
  diffOpened,
  FileNotFoundError,
  listDirectory,
  MAX_TEXT_DIFF_BYTES,
  openFiles,
  pointDevice,
  pointInfo,
  readFile,
  statPath,
  textDiff,
  zipFolder,
  type FileStat,
  type PointContext,
  type PointFiles,
  type PointInfo,
  type PointsDiff,
} from "./ext4/files.ts";
import type { LocalStore } from "./local-store.ts";
import { chunkHash, referencedChunks, type ChunkRef } from "./repo-format.ts";
import { buildSnapshot, storeForm, type BuildOptions } from "./snapshot.ts";
import { BLOCK_SIZE, type CheckpointRecord, type MarkerRecord, type Point } from "./store-format.ts";
import { ancestry } from "./timeline.ts";

/** A point the page names: its disk point, and the checkpoint's or marker's id when it is one. */
export interface FilesPoint extends Point {
  id?: string;
}

/** Points kept open (each with a block cache of up to ext4's CACHE_BYTES). */
export const OPEN_POINTS = 4;
/** Most entries one directory listing returns (the rest are counted). */
export const MAX_LIST_ENTRIES = 5000;
/** Most bytes one read returns: larger files are read in pieces. */
export const MAX_READ_BYTES = 16 * 1024 * 1024;
/** Most file bytes a folder's zip may hold (it is made in memory, then copied to the page). */
export const MAX_ZIP_FILE_BYTES = 256 * 1024 * 1024;
/** Most points a file with history carries: each point's manifest lists the whole disk. */
export const MAX_HISTORY_POINTS = 32;

/** What changed between two points, and how long the worker took to say it. */
export interface FilesDiff extends PointsDiff {
  ms: number;
  /** Where the time went: opening both points, Disk.changedBlocks, the diff itself (ms). */
  phases: { open: number; changedBlocks: number; diff: number };
  /** Disk reads this diff made (both points, opening included) and their bytes. */
  reads: { count: number; bytes: number };
}

/** A directory at a point: its entries (at most MAX_LIST_ENTRIES, by name) and how many it has. */
export interface FilesListing {
  entries: FileStat[];
  total: number;
}

/** A text diff of one path between two points, or why there is none. */
export interface FilesTextDiff {
  patch: string | null;
  /** Set when `patch` is null: "binary" (not UTF-8 text), "large" (over MAX_TEXT_DIFF_BYTES), "not a file". */
  why?: "binary" | "large" | "not a file";
}

export interface FilesDeps {
  /** The open machine's disk and checkpoints (throw when none is open). */
  disk(): Disk;
  checkpoints(): Checkpoints;
  store(): Promise<LocalStore>;
}

export class FilesAtPoints {
  /** Opened points, least recently used first (a Map keeps insertion order). */
  private readonly opened = new Map<string, Promise<PointFiles>>();
  /** Blocks that differ between two points, by pair, the last few asked (Disk.changedBlocks). */
  private readonly changed = new Map<string, Promise<number[]>>();
  /** The disk the opened points belong to (another machine opened: all dropped). */
  private openedDisk: Disk | undefined;
  /** One request at a time: a diff lends its file systems' listing caches to each other. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: FilesDeps) {}

  /** Drops every opened point: stored history was rewritten (thinning, a deleted branch, a reset). */
  forget(): void {
    this.opened.clear();
    this.changed.clear();
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * What the timeline says about a point (for the "taken mid-write" flag), checking that it is
   * still in the history: a thinned point's blocks may be gone, and reading it would mix versions.
   */
  private async context(p: FilesPoint): Promise<PointContext> {
    const disk = this.deps.disk();
    if (!disk.branchList().some((b) => b.id === p.branch)) throw new Error(`There is no branch ${p.branch} in this machine any more.`);
    const [checkpoints, markers] = await Promise.all([this.deps.checkpoints().list(), this.deps.store().then((s) => s.listMarkers(disk.id))]);
    const at = (r: { branch: number; seq: number }) => r.branch === p.branch && r.seq === p.seq;
    const found: CheckpointRecord | MarkerRecord | undefined =
      (p.id && (checkpoints.find((c) => c.id === p.id) ?? markers.find((m) => m.id === p.id))) ||
      checkpoints.find(at) ||
      markers.find((m) => at(m) && m.kind !== "quiet") ||
      markers.find(at);
    const tip = disk.branchList().some((b) => b.id === p.branch && b.head === p.seq);
    if (!found && !tip && !(p.branch === 0 && p.seq === 0)) {
      throw new Error("That point is no longer in this machine's history (it was thinned).");
    }
    if (found && !at(found)) throw new Error("That point is not where the page thinks it is: reload the timeline.");
    const kind = found ? ("kind" in found ? found.kind : "checkpoint") : undefined;
    const context: PointContext = kind ? { kind } : {};
    if (found && p.seq > 0) {
      const [write] = await (await this.deps.store()).listLog(disk.id, p.seq, 1);
      if (write?.seq === p.seq) context.sinceLastWriteMs = found.time - write.time;
    }
    return context;
  }

  /** The point's file system, opened (or as opened before). */
  private files(p: Point): Promise<PointFiles> {
    const disk = this.deps.disk();
    if (disk !== this.openedDisk) {
      this.forget();
      this.openedDisk = disk;
    }
    const key = `${p.branch}:${p.seq}`;
    let files = this.opened.get(key);
    if (files) {
      this.opened.delete(key);
    } else {
      files = openFiles(pointDevice(disk, { branch: p.branch, seq: p.seq }));
      files.catch(() => this.opened.delete(key));
    }
    this.opened.set(key, files);
    while (this.opened.size > OPEN_POINTS) this.opened.delete(this.opened.keys().next().value!);
    return files;
  }

  /** Disk.changedBlocks of two points, as found before (it never changes until forget()). */
  private changedBlocks(disk: Disk, a: Point, b: Point): Promise<number[]> {
    const key = `${a.branch}:${a.seq} ${b.branch}:${b.seq}`;
    let blocks = this.changed.get(key);
    if (blocks) this.changed.delete(key);
    else {
      blocks = disk.changedBlocks(a, b);
      blocks.catch(() => this.changed.delete(key));
    }
    this.changed.set(key, blocks);
    while (this.changed.size > OPEN_POINTS) this.changed.delete(this.changed.keys().next().value!);
    return blocks;
  }

  /** What changed from `a` to `b`, file by file (any two points, across branches). */
  diff(a: FilesPoint, b: FilesPoint): Promise<FilesDiff> {
    return this.serial(async () => {
      const started = performance.now();
      const disk = this.deps.disk();
      const [ca, cb] = await Promise.all([this.context(a), this.context(b)]);
      const [fa, fb] = await Promise.all([this.files(a), this.files(b)]);
      const opened = performance.now();
      const readBefore = [fa, fb].reduce((n, f) => ({ count: n.count + f.fs.reader.stats.reads, bytes: n.bytes + f.fs.reader.stats.bytes }), { count: 0, bytes: 0 });
      const blocks = await this.changedBlocks(disk, a, b);
      const listed = performance.now();
      const ranges = blocks.map((block) => ({ offset: block * BLOCK_SIZE, length: BLOCK_SIZE }));
      const diff = await diffOpened(fa, fb, ranges, { a: ca, b: cb });
      const done = performance.now();
      const reads = { count: fa.fs.reader.stats.reads + fb.fs.reader.stats.reads - readBefore.count, bytes: fa.fs.reader.stats.bytes + fb.fs.reader.stats.bytes - readBefore.bytes };
      return { ...diff, ms: done - started, phases: { open: opened - started, changedBlocks: listed - opened, diff: done - listed }, reads };
    });
  }

  /** How far the point's view of its files can be trusted (journal, taken mid-write). */
  info(p: FilesPoint): Promise<PointInfo> {
    return this.serial(async () => {
      const context = await this.context(p);
      return pointInfo((await this.files(p)).fs, context);
    });
  }

  list(p: FilesPoint, path: string): Promise<FilesListing> {
    return this.serial(async () => {
      await this.context(p);
      const entries = await listDirectory((await this.files(p)).fs, path);
      return { entries: entries.slice(0, MAX_LIST_ENTRIES), total: entries.length };
    });
  }

  stat(p: FilesPoint, path: string): Promise<FileStat> {
    return this.serial(async () => {
      await this.context(p);
      return statPath((await this.files(p)).fs, path);
    });
  }

  /** A regular file's bytes from `offset`, at most `length` (and MAX_READ_BYTES). */
  read(p: FilesPoint, path: string, offset = 0, length = MAX_READ_BYTES): Promise<Uint8Array> {
    return this.serial(async () => {
      await this.context(p);
      return readFile((await this.files(p)).fs, path, offset, Math.min(length, MAX_READ_BYTES));
    });
  }

  /** A folder (or one file) as a zip (see ext4/files.ts zipFolder), at most MAX_ZIP_FILE_BYTES of files. */
  zip(p: FilesPoint, path: string): Promise<Uint8Array> {
    return this.serial(async () => {
      await this.context(p);
      return zipFolder((await this.files(p)).fs, path, { maxBytes: MAX_ZIP_FILE_BYTES });
    });
  }

  /** A unified diff of a small text file between two points (a side where it is absent is empty). */
  textDiff(a: FilesPoint, b: FilesPoint, path: string): Promise<FilesTextDiff> {
    return this.serial(async () => {
      await Promise.all([this.context(a), this.context(b)]);
      const sides: (Uint8Array | null)[] = [];
      for (const p of [a, b]) {
        const { fs } = await this.files(p);
        let stat: FileStat | null;
        try {
          stat = await statPath(fs, path);
        } catch (err) {
          if (!(err instanceof FileNotFoundError)) throw err;
          stat = null;
        }
        if (stat && stat.kind !== "file") return { patch: null, why: "not a file" as const };
        if (stat && stat.size > MAX_TEXT_DIFF_BYTES) return { patch: null, why: "large" as const };
        sides.push(stat ? await readFile(fs, path, 0, MAX_TEXT_DIFF_BYTES) : null);
      }
      const patch = textDiff(path, sides[0]!, sides[1]!);
      return patch === null ? { patch, why: "binary" as const } : { patch };
    });
  }

  /**
   * The checkpoints a file "with history" of `checkpointId` carries, oldest first, ending with it:
   * those on its history (its branch and the branches it forked from, up to it), one per disk
   * state (of checkpoints one after another at the same disk point, the newest, which has the
   * latest memory), the newest MAX_HISTORY_POINTS.
   */
  async history(checkpointId: string): Promise<string[]> {
    const disk = this.deps.disk();
    const all = await this.deps.checkpoints().list();
    const chosen = all.find((c) => c.id === checkpointId);
    if (!chosen) throw new Error("That checkpoint is not in this machine any more.");
    const segments = ancestry(new Map(disk.branchList().map((b) => [b.id, b])), chosen);
    const onPath = all
      .filter((c) => c.time <= chosen.time && c.id !== chosen.id && segments.some((s) => s.branch === c.branch && c.seq <= s.maxSeq))
      .sort((x, y) => x.time - y.time);
    const kept: CheckpointRecord[] = [];
    for (const c of [...onPath, chosen]) {
      const last = kept.at(-1);
      if (last && last.branch === c.branch && last.seq === c.seq) kept.pop();
      kept.push(c);
    }
    return kept.slice(-MAX_HISTORY_POINTS).map((c) => c.id);
  }
}

/** One checkpoint to bundle: its label and what buildSnapshot needs (loaded when its turn comes). */
export type HistorySpec = Omit<BuildOptions, "disk"> & { label: PointLabel };

/**
 * Several checkpoints of a machine in one bundle (format version 2), like bundle.ts bundlePoints
 * but loading each point's machine state only when its turn comes: a Debian machine's states are
 * tens of MiB each, and a file with history may carry dozens.
 */
export async function bundleHistory(
  disk: Disk,
  ids: readonly string[],
  load: (id: string) => Promise<HistorySpec>,
  loadBase: (ref: ChunkRef) => Promise<Uint8Array>,
): Promise<{ bytes: Uint8Array; points: BundlePoint[] }> {
  const files = new Map<ChunkRef, Uint8Array>();
  const points: BundlePoint[] = [];
  for (const id of ids) {
    const { label, ...options } = await load(id);
    const snapshot = await buildSnapshot({ ...options, disk });
    for (const [ref, body] of snapshot.files) files.set(ref, body);
    points.push({ label, manifest: snapshot.manifest });
  }
  const have = new Set([...files.keys()].map(chunkHash));
  for (const ref of new Set(points.flatMap((p) => referencedChunks(p.manifest)))) {
    if (have.has(chunkHash(ref))) continue;
    const { ref: stored, stored: bytes } = await storeForm(await loadBase(ref));
    files.set(stored, bytes);
    have.add(chunkHash(ref));
  }
  return { bytes: encodePoints(points, files), points };
}
