/**
 * Files at a point: what the disk worker (and the CLI) call. Opens the ext4 file system of a disk
 * at a timeline point, lists, stats, reads and zips its files, and diffs two points from the
 * blocks that changed between them. Plain TypeScript over a BlockDevice; Disk-specific glue is
 * the two small functions at the end.
 */
import { createTwoFilesPatch } from "diff";
import { Zip, ZipDeflate, ZipPassThrough } from "fflate";
import type { Disk } from "../disk.ts";
import { BLOCK_SIZE, type Point } from "../store-format.ts";
import { sliceDevice, type BlockDevice } from "./block-device.ts";
import { diffFilesystems, fsBlocksOf, type FileDiff } from "./diff.ts";
import { Ext4, joinPath, normalizePath, type FileStat, type OpenOptions } from "./ext4.ts";
import { S_IFDIR, S_IFLNK, S_IFMT, UnreadableDiskError, kindOfMode, type Inode } from "./ext4-format.ts";
import type { JournalState } from "./journal.ts";
import { findVolumes, type Volume } from "./partitions.ts";

export { UnreadableDiskError } from "./ext4-format.ts";
export type { FileChange, FileDiff, ChangedField, ChangeType } from "./diff.ts";
export type { FileStat } from "./ext4.ts";
export type { Volume } from "./partitions.ts";

/** A point's file system, opened. */
export interface PointFiles {
  fs: Ext4;
  /** The file system chosen, and every one the disk has (a disk with several lists them). */
  volume: Volume;
  volumes: Volume[];
}

/** A path that does not exist at the point, or is not what the call needs (not the disk's fault). */
export class FileNotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FileNotFoundError";
  }
}

/**
 * Opens the ext2/3/4 file system of a disk: the volume numbered `volume` (partition number as
 * Linux names it, 0 for a whole-disk file system) or else the first one found. Throws
 * UnreadableDiskError ("can't read files on this disk: …") for anything else.
 */
export async function openFiles(device: BlockDevice, options: OpenOptions & { volume?: number } = {}): Promise<PointFiles> {
  let volumes: Volume[];
  try {
    volumes = await findVolumes(device);
  } catch (err) {
    throw err instanceof UnreadableDiskError ? err : new UnreadableDiskError(`its partition table could not be read (${String(err)})`);
  }
  if (volumes.length === 0) throw new UnreadableDiskError("it has no ext2, ext3 or ext4 file system (only those can be read)");
  const volume = options.volume === undefined ? volumes[0]! : volumes.find((v) => v.number === options.volume);
  if (!volume) throw new UnreadableDiskError(`it has no ext2/3/4 file system on partition ${options.volume}`);
  const fs = await Ext4.open(sliceDevice(device, volume.offset, volume.size), options);
  return { fs, volume, volumes };
}

/** What the timeline knows about a point, for the consistency flag. */
export interface PointContext {
  /** The marker at the point, if any ("quiet": the disk had been idle QUIET_AFTER_MS). */
  kind?: "checkpoint" | "bookmark" | "quiet";
  /** Milliseconds from the newest write at or before the point to the point's time. */
  sinceLastWriteMs?: number;
}

/** Writes this close before a point make it "taken mid-write". */
export const RECENT_WRITE_MS = 1000;

/** How far a point's view of its files can be trusted. */
export interface PointInfo {
  journal: JournalState;
  /**
   * The view may be inconsistent: the journal ends in a transaction without its commit (the point
   * cut a metadata update in two), or the point is not a quiet point and the disk was written
   * within RECENT_WRITE_MS before it (the guest was mid-write: data and metadata of one change
   * may be on either side of the point). Quiet points, taken after seconds of disk idleness, are
   * never flagged by the second rule. Either way, writes still in the guest's page cache are
   * not on the disk at any point: a file saved a moment before may show its older content.
   */
  mayBeInconsistent: boolean;
  reasons: string[];
}

export function pointInfo(fs: Ext4, context: PointContext = {}): PointInfo {
  const reasons: string[] = [];
  if (fs.journal.uncommitted) reasons.push("the journal ends in a transaction that was not committed");
  if (context.kind !== "quiet" && context.sinceLastWriteMs !== undefined && context.sinceLastWriteMs < RECENT_WRITE_MS) {
    reasons.push("the disk was being written when this point was taken");
  }
  return { journal: { ...fs.journal }, mayBeInconsistent: reasons.length > 0, reasons };
}

async function need(fs: Ext4, path: string): Promise<Inode> {
  const inode = await fs.lookup(path);
  if (!inode) throw new FileNotFoundError(`${normalizePath(path)} does not exist at this point`);
  return inode;
}

/** A directory's entries with their stat, sorted by name. */
export async function listDirectory(fs: Ext4, path: string): Promise<FileStat[]> {
  const dir = await need(fs, path);
  if ((dir.mode & S_IFMT) !== S_IFDIR) throw new FileNotFoundError(`${normalizePath(path)} is not a directory`);
  const entries = [...(await fs.listDir(dir)).entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const inodes = await fs.inodes(entries.map((e) => e.ino));
  const base = normalizePath(path);
  return Promise.all(entries.map((e, i) => fs.statInode(inodes[i]!, joinPath(base, e.name))));
}

/** stat() of a path (symlinks not followed); FileNotFoundError when it does not exist. */
export async function statPath(fs: Ext4, path: string): Promise<FileStat> {
  return fs.statInode(await need(fs, path), normalizePath(path));
}

/** Bytes of a regular file from `offset`, at most `length` (bounded pieces: files can be large). */
export async function readFile(fs: Ext4, path: string, offset = 0, length = 16 * 1024 * 1024): Promise<Uint8Array> {
  const inode = await need(fs, path);
  if (kindOfMode(inode.mode) !== "file") throw new FileNotFoundError(`${normalizePath(path)} is not a regular file`);
  return fs.read(inode, offset, length);
}

/** A file's content piece by piece (`piece` bytes each), for downloads and `cat`. */
export async function* readFilePieces(fs: Ext4, path: string, piece = 1024 * 1024): AsyncGenerator<Uint8Array> {
  const inode = await need(fs, path);
  if (kindOfMode(inode.mode) !== "file") throw new FileNotFoundError(`${normalizePath(path)} is not a regular file`);
  for (let at = 0; at < inode.size; at += piece) yield await fs.read(inode, at, piece);
}

/** Most bytes of file content a zip may hold (the zip is built in memory). */
export const MAX_ZIP_BYTES = 512 * 1024 * 1024;

/**
 * A folder (or one file) as a zip, its paths relative to the folder's parent, with Unix modes
 * (symlinks are stored as links, as Info-ZIP does; devices, fifos and sockets are left out).
 * `onChunk` receives the zip as it is made; without it the whole zip is returned.
 */
export async function zipFolder(
  fs: Ext4,
  path: string,
  options: { maxBytes?: number; onChunk?: (chunk: Uint8Array) => void } = {},
): Promise<Uint8Array> {
  const root = await need(fs, path);
  const base = normalizePath(path);
  const prefix = base === "/" ? "" : base.slice(0, base.lastIndexOf("/") + 1);
  const limit = options.maxBytes ?? MAX_ZIP_BYTES;
  const chunks: Uint8Array[] = [];
  let failure: Error | null = null;
  let finished = false;
  const zip = new Zip((err, chunk, final) => {
    if (err) failure = err;
    else {
      if (options.onChunk) options.onChunk(chunk);
      else chunks.push(chunk);
      if (final) finished = true;
    }
  });
  let total = 0;
  for await (const { path: p, inode } of fs.walkFrom(root, base)) {
    const name = (base === "/" ? p.slice(1) : p.slice(prefix.length)) || "";
    if (name === "") continue; // the root itself
    const kind = kindOfMode(inode.mode);
    const meta = { os: 3, attrs: (inode.mode & 0xffff) * 65536, mtime: new Date(Math.max(inode.mtime, 315532800) * 1000) };
    if (kind === "dir") {
      const entry = new ZipPassThrough(`${name}/`);
      Object.assign(entry, meta);
      zip.add(entry);
      entry.push(new Uint8Array(0), true);
    } else if (kind === "symlink") {
      const entry = new ZipPassThrough(name);
      Object.assign(entry, meta, { attrs: (S_IFLNK | 0o777) * 65536 });
      zip.add(entry);
      entry.push(new TextEncoder().encode(await fs.readlink(inode)), true);
    } else if (kind === "file") {
      total += inode.size;
      if (total > limit) throw new FileNotFoundError(`${base} holds more than ${Math.round(limit / 2 ** 20)} MiB: too much for one zip`);
      const entry = new ZipDeflate(name, { level: 6 });
      Object.assign(entry, meta);
      zip.add(entry);
      if (inode.size === 0) entry.push(new Uint8Array(0), true);
      for (let at = 0; at < inode.size; at += 1024 * 1024) {
        entry.push(await fs.read(inode, at, 1024 * 1024), at + 1024 * 1024 >= inode.size);
      }
    }
    if (failure) throw failure;
  }
  zip.end();
  if (failure) throw failure;
  if (!finished) throw new Error("the zip did not finish");
  if (options.onChunk) return new Uint8Array(0);
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Largest file the text diff is made for. */
export const MAX_TEXT_DIFF_BYTES = 256 * 1024;

/** Text, as far as a diff is concerned: valid UTF-8 without NUL bytes. */
function asText(bytes: Uint8Array): string | null {
  if (bytes.includes(0)) return null;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

/**
 * A unified diff of two versions of a small text file (jsdiff), or null when either is not text
 * or is larger than MAX_TEXT_DIFF_BYTES. A missing side (added or removed file) is empty.
 */
export function textDiff(path: string, before: Uint8Array | null, after: Uint8Array | null): string | null {
  if ((before?.byteLength ?? 0) > MAX_TEXT_DIFF_BYTES || (after?.byteLength ?? 0) > MAX_TEXT_DIFF_BYTES) return null;
  const a = before ? asText(before) : "";
  const b = after ? asText(after) : "";
  if (a === null || b === null) return null;
  return createTwoFilesPatch(before ? `a${path}` : "/dev/null", after ? `b${path}` : "/dev/null", a, b, undefined, undefined, { context: 3 });
}

/** Two points' files and what changed between them. */
export interface PointsDiff extends FileDiff {
  a: PointInfo;
  b: PointInfo;
  volume: Volume;
}

/**
 * The diff of two opened points, given the disk byte ranges that may differ between them (a
 * superset is fine). Both must be the same volume of the same disk.
 */
export async function diffOpened(
  a: PointFiles,
  b: PointFiles,
  changedRanges: Iterable<{ offset: number; length: number }>,
  context: { a?: PointContext; b?: PointContext } = {},
): Promise<PointsDiff> {
  if (a.volume.offset !== b.volume.offset) throw new UnreadableDiskError("the two points have their file systems in different places");
  const blocks = fsBlocksOf(changedRanges, b.volume.offset, b.fs);
  const diff = await diffFilesystems(a.fs, b.fs, blocks);
  return { ...diff, a: pointInfo(a.fs, context.a), b: pointInfo(b.fs, context.b), volume: b.volume };
}

/** Bytes compared at a time by differingBlocks. */
const COMPARE_BYTES = 1024 * 1024;

/**
 * Narrows byte ranges that may differ between two disks to the 4 KiB blocks whose bytes do (a
 * bundle's chunks are 64 KiB: a changed chunk holds unchanged blocks, which would otherwise send
 * the diff looking for their owners). Reads both sides of every range.
 */
export async function differingBlocks(
  a: BlockDevice,
  b: BlockDevice,
  ranges: Iterable<{ offset: number; length: number }>,
): Promise<{ offset: number; length: number }[]> {
  const out: { offset: number; length: number }[] = [];
  for (const r of ranges) {
    for (let at = r.offset; at < r.offset + r.length; at += COMPARE_BYTES) {
      const length = Math.min(COMPARE_BYTES, r.offset + r.length - at, Math.min(a.size, b.size) - at);
      if (length <= 0) break;
      const [x, y] = await Promise.all([a.read(at, length), b.read(at, length)]);
      for (let o = 0; o < length; o += BLOCK_SIZE) {
        const end = Math.min(length, o + BLOCK_SIZE);
        let same = true;
        for (let i = o; i < end; i++) {
          if (x[i] !== y[i]) {
            same = false;
            break;
          }
        }
        if (!same) out.push({ offset: at + o, length: end - o });
      }
    }
  }
  return out;
}

// ── the machine's disk ──────────────────────────────────────────────────────────────────────────

/**
 * The disk as it is at `point`, as a BlockDevice (reads go through the timeline index, each of its
 * groups looked up once per device). Drop it after a storage sweep (Disk.readAtCached).
 */
export function pointDevice(disk: Disk, point: Point): BlockDevice {
  const versions = new Map<string, Uint32Array | null>();
  return { size: disk.size, read: (offset, length) => disk.readAtCached(point, offset, length, versions) };
}

/** The diff between two points of a machine's disk (any two, across branches). */
export async function diffPoints(
  disk: Disk,
  a: Point,
  b: Point,
  options: { volume?: number; context?: { a?: PointContext; b?: PointContext } } = {},
): Promise<PointsDiff> {
  const [fa, fb] = await Promise.all([openFiles(pointDevice(disk, a), options), openFiles(pointDevice(disk, b), options)]);
  const blocks = await disk.changedBlocks(a, b);
  return diffOpened(
    fa,
    fb,
    blocks.map((block) => ({ offset: block * BLOCK_SIZE, length: BLOCK_SIZE })),
    options.context,
  );
}
