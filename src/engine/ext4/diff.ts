/**
 * What changed between two points, file by file, computed from the blocks that changed (the
 * write log knows them: Disk.changedBlocks, or a bundle's differing chunks) instead of walking
 * the whole file system.
 *
 * The result is defined as the difference of the two full listings (path → kind, mode, uid, gid,
 * size, symlink target, content): a path only at A is removed, only at B added (a removed or added
 * directory brings every path under it), a path at both whose kind differs is removed and added,
 * and otherwise modified when a field differs (directories compare mode, uid and gid; their
 * entries are paths of their own). Times, link counts and inode numbers are not compared.
 *
 * How changed blocks become paths:
 *  - Inode table blocks → the inodes in them; records that differ are changed inodes.
 *  - Directory blocks and extent/indirect blocks → the inodes owning them: the changed inodes'
 *    own maps (at both points) explain most of them, since writing a file or a directory updates
 *    its inode (mtime). ext4 has no reverse map for the rest (a point taken between a file's data
 *    and its inode reaching the disk, or a write that bypassed the inode, such as debugfs's):
 *    blocks free in both points' bitmaps are nobody's; a directory block names its owner in its
 *    "." entry (a first block) or through a subdirectory's "..", else its owner is looked for
 *    among the directories numbered just before its entries' inodes (see the name search below);
 *    what is left is found by scanning every in-use inode's map at B: an honest, slower
 *    fallback, said in `notes`.
 *  - Superblock, descriptors, bitmaps and the journal are not files. Blocks the journal replays at
 *    either point count as changed too (journal.ts).
 *  - A changed directory (same directory at the same path at both points) is compared entry by
 *    entry. A changed file needs its names: entries of the directories already read name it, else
 *    directories are searched at B, nearest first: those numbered just before the file in its
 *    group's inode table (mke2fs -d numbers a directory's files right after it, and ext4 keeps a
 *    file's inode in its directory's group when it can), then the rest of the group, then all
 *    others. A name is reported only when the same path names the same inode at A; other cases
 *    are an entry that changed, which its directory's comparison reports. Hard links: names are
 *    searched until the inode's link count is found.
 *  - Directory listings are parsed once per diff when the directory is the same at both points
 *    (same inode record, none of its blocks changed): Ext4.shareListing.
 * If the geometry differs between the points (a resized file system), the diff walks both trees
 * (fullDiff) and says so.
 */
import { equalBytes } from "../util.ts";
import { joinPath, type BlockMap, type DirEntry, type Ext4, type Listing, type Run } from "./ext4.ts";
import { BG_BLOCK_UNINIT, BG_INODE_UNINIT, descriptorLocation, groupHasSuper, INCOMPAT_META_BG, inodeInUse, kindOfMode, ROOT_INO, S_IFDIR, S_IFMT, type FileKind, type Inode } from "./ext4-format.ts";

export type ChangeType = "added" | "removed" | "modified";
export type ChangedField = "content" | "size" | "mode" | "uid" | "gid" | "target";

export interface FileChange {
  path: string;
  change: ChangeType;
  /** The kind at B (at A for a removed path). */
  kind: FileKind;
  /** For "modified": what differs. */
  what: ChangedField[];
  /** Sizes of files and symlinks at A and B, where the path exists there. */
  oldSize?: number;
  newSize?: number;
}

export interface FileDiff {
  /** Sorted by path; at one path, removed comes before added. */
  changes: FileChange[];
  /** How the answer was reached where it was not the direct route (fallbacks), for honesty. */
  notes: string[];
  stats: { changedBlocks: number; changedInodes: number; directoriesCompared: number; ownerScan: boolean; nameSearchDirs: number };
}

/** Inode table bytes read at a time by the name search (one 64 KiB repository chunk). */
const WINDOW_BYTES = 64 * 1024;
/** Directories tried as the owner of a changed directory block before scanning every inode. */
const MAX_OWNER_GUESSES = 256;
/** Bytes read per piece when comparing two files' contents. */
const COMPARE_PIECE = 1024 * 1024;

const isDir = (inode: Inode) => (inode.mode & S_IFMT) === S_IFDIR;
const changeOrder: Record<ChangeType, number> = { removed: 0, modified: 1, added: 2 };

/** The file system blocks that disk byte ranges touch, for a volume at `offset` on the disk. */
export function fsBlocksOf(ranges: Iterable<{ offset: number; length: number }>, offset: number, fs: Ext4): number[] {
  const bs = fs.blockSize;
  const out = new Set<number>();
  for (const r of ranges) {
    const from = Math.max(r.offset, offset) - offset;
    const to = r.offset + r.length - offset;
    if (to <= 0 || from >= fs.sb.blocksCount * bs) continue;
    const last = Math.min(Math.ceil(to / bs), fs.sb.blocksCount);
    for (let b = Math.floor(from / bs); b < last; b++) out.add(b);
  }
  return [...out].sort((x, y) => x - y);
}

/** Sorted [start, end) intervals with a membership test. */
class Intervals {
  private starts: number[] = [];
  private ends: number[] = [];
  private readonly pending: [number, number][] = [];
  add(start: number, end: number): void {
    this.pending.push([start, end]);
  }
  private settle(): void {
    if (this.pending.length === 0) return;
    const all = [...this.starts.map((s, i): [number, number] => [s, this.ends[i]!]), ...this.pending].sort((x, y) => x[0] - y[0]);
    this.pending.length = 0;
    this.starts = [];
    this.ends = [];
    for (const [s, e] of all) {
      const last = this.ends.length - 1;
      if (last >= 0 && s <= this.ends[last]!) this.ends[last] = Math.max(this.ends[last]!, e);
      else {
        this.starts.push(s);
        this.ends.push(e);
      }
    }
  }
  has(x: number): boolean {
    this.settle();
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (x < this.starts[mid]!) hi = mid - 1;
      else if (x >= this.ends[mid]!) lo = mid + 1;
      else return true;
    }
    return false;
  }
}

function addMap(into: Intervals, map: BlockMap): void {
  for (const r of map.runs) into.add(r.physical, r.physical + r.count);
  for (const m of map.meta) into.add(m, m + 1);
}

function sameGeometry(a: Ext4, b: Ext4): boolean {
  const [x, y] = [a.sb, b.sb];
  if (x.blockSize !== y.blockSize || x.blocksCount !== y.blocksCount || x.inodesPerGroup !== y.inodesPerGroup) return false;
  if (x.inodeSize !== y.inodeSize || x.groupCount !== y.groupCount || x.inodesCount !== y.inodesCount) return false;
  return a.groups.every((g, i) => g.inodeTable === b.groups[i]!.inodeTable);
}

/** Collects changes keyed by path and type (the same change found twice is one). */
class Changes {
  private readonly map = new Map<string, FileChange>();
  add(c: FileChange): void {
    this.map.set(`${c.change}\0${c.path}`, c);
  }
  list(): FileChange[] {
    return [...this.map.values()].sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : changeOrder[x.change] - changeOrder[y.change]));
  }
}

const sized = (kind: FileKind) => kind === "file" || kind === "symlink";

/**
 * Compares the points' file systems, given the file system blocks that may differ (a superset is
 * fine; a block missing from it is assumed unchanged).
 */
export async function diffFilesystems(a: Ext4, b: Ext4, changedBlocks: Iterable<number>): Promise<FileDiff> {
  const notes: string[] = [];
  if (!sameGeometry(a, b)) {
    notes.push("The file system's geometry differs between the points (it was resized): both trees were walked.");
    return fullDiff(a, b, notes);
  }
  const changed = new Set(changedBlocks);
  for (const fs of [a, b]) for (const k of fs.reader.overlay.keys()) changed.add(k);
  const ctx = new DiffContext(a, b, changed, notes);
  try {
    return await ctx.run();
  } finally {
    a.shareListing = undefined;
    b.shareListing = undefined;
  }
}

class DiffContext {
  readonly out = new Changes();
  /** Inodes whose records differ: [at A, at B]. */
  readonly changedInodes = new Map<number, [Inode, Inode]>();
  readonly pathsA = new Map<number, string | null>();
  readonly pathsB = new Map<number, string | null>();
  stats: FileDiff["stats"] = { changedBlocks: 0, changedInodes: 0, directoriesCompared: 0, ownerScan: false, nameSearchDirs: 0 };

  constructor(
    readonly a: Ext4,
    readonly b: Ext4,
    readonly changed: Set<number>,
    readonly notes: string[],
  ) {
    this.stats.changedBlocks = changed.size;
    const share = (other: Ext4) => async (inode: Inode): Promise<Listing | undefined> => {
      const listing = other.cachedListing(inode.ino);
      return listing && (await this.unchanged(inode)) ? listing : undefined;
    };
    a.shareListing = share(b);
    b.shareListing = share(a);
  }

  /** The inode is the same record at both points and none of its blocks changed. */
  async unchanged(inode: Inode): Promise<boolean> {
    if (this.changedInodes.has(inode.ino)) return false;
    const loc = this.b.inodeLocation(inode.ino);
    if (this.changed.has(loc.block)) {
      const [x, y] = await Promise.all([this.a.inode(inode.ino), this.b.inode(inode.ino)]);
      if (!equalBytes(x.raw, y.raw)) return false;
    }
    const map = await this.b.blockMap(inode);
    if (map.meta.some((m) => this.changed.has(m))) return false;
    for (const r of map.runs) for (let i = 0; i < r.count; i++) if (this.changed.has(r.physical + i)) return false;
    return true;
  }

  async run(): Promise<FileDiff> {
    const { a, b, changed } = this;
    const sb = b.sb;
    // Blocks that are not files' data: superblock, descriptors, bitmaps, the journal.
    const metadata = new Intervals();
    metadata.add(0, sb.firstDataBlock + 1);
    const gdtBlocks = Math.ceil((sb.groupCount * sb.descSize) / sb.blockSize);
    for (let g = 0; g < sb.groupCount; g++) {
      const [block] = descriptorLocation(sb, g);
      metadata.add(block, block + 1);
      // Superblock and descriptor copies, and the blocks reserved for the table to grow.
      if (groupHasSuper(sb, g)) {
        const start = sb.firstDataBlock + g * sb.blocksPerGroup;
        metadata.add(start, start + 1 + (sb.incompat & INCOMPAT_META_BG ? 0 : gdtBlocks + sb.reservedGdtBlocks));
      }
      for (const fs of [a, b]) {
        const d = fs.groups[g]!;
        metadata.add(d.blockBitmap, d.blockBitmap + 1);
        metadata.add(d.inodeBitmap, d.inodeBitmap + 1);
      }
    }
    if (sb.journalInum) for (const fs of [a, b]) addMap(metadata, await fs.blockMap(await fs.inode(sb.journalInum)));
    // Inode table blocks → inodes; the rest is data (or tree blocks) of some file.
    const tables = b.groups.map((d, g) => ({ start: d.inodeTable, g })).sort((x, y) => x.start - y.start);
    const itBlocks = b.inodeTableBlocks;
    const perBlock = sb.blockSize / sb.inodeSize;
    const candidates = new Set<number>();
    const data: number[] = [];
    for (const block of changed) {
      let lo = 0;
      let hi = tables.length - 1;
      let table: { start: number; g: number } | undefined;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (tables[mid]!.start <= block) {
          table = tables[mid];
          lo = mid + 1;
        } else hi = mid - 1;
      }
      if (table && block < table.start + itBlocks) {
        const first = table.g * sb.inodesPerGroup + (block - table.start) * perBlock + 1;
        for (let i = 0; i < perBlock; i++) if (first + i <= sb.inodesCount && (block - table.start) * perBlock + i < sb.inodesPerGroup) candidates.add(first + i);
      } else if (!metadata.has(block)) {
        data.push(block);
      }
    }
    const inos = [...candidates].sort((x, y) => x - y);
    const [listA, listB] = await Promise.all([a.inodes(inos), b.inodes(inos)]);
    inos.forEach((ino, i) => {
      if (!equalBytes(listA[i]!.raw, listB[i]!.raw)) this.changedInodes.set(ino, [listA[i]!, listB[i]!]);
    });
    // Reserved inodes (journal, resize, ...) are not files; the root directory is.
    for (const ino of [...this.changedInodes.keys()]) if (ino < sb.firstIno && ino !== ROOT_INO) this.changedInodes.delete(ino);
    this.stats.changedInodes = this.changedInodes.size;

    // Which data blocks the changed inodes explain; owners of the rest.
    const explained = new Intervals();
    for (const [, pair] of this.changedInodes) {
      for (const [fs, inode] of [[a, pair[0]], [b, pair[1]]] as const) {
        if (inodeInUse(inode) || inode.ino === ROOT_INO) addMap(explained, await fs.blockMap(inode));
      }
    }
    const orphans = data.filter((blk) => !explained.has(blk));
    const extra = orphans.length > 0 ? await this.ownersOf(orphans) : [];

    // Classify: directories at both points, and other inodes at both points.
    const dirs: number[] = [];
    const files: number[] = [];
    for (const [ino, [x, y]] of this.changedInodes) {
      if (!inodeInUse(x) && ino !== ROOT_INO) continue;
      if (!inodeInUse(y) && ino !== ROOT_INO) continue;
      if (isDir(x) && isDir(y)) dirs.push(ino);
      else files.push(ino);
    }
    for (const ino of extra) {
      const [x, y] = await Promise.all([a.inode(ino), b.inode(ino)]);
      if (!inodeInUse(x) || !inodeInUse(y)) continue;
      this.changedInodes.set(ino, [x, y]);
      if (isDir(x) && isDir(y)) dirs.push(ino);
      else files.push(ino);
    }

    for (const d of dirs) await this.compareDirectory(d);
    await this.compareFiles(files);
    return { changes: this.out.list(), notes: this.notes, stats: this.stats };
  }

  /**
   * Owners of changed blocks that no changed inode explains (see the notes at the top): blocks
   * free at both points are nobody's; the others are looked for in every in-use inode's map at B.
   */
  async ownersOf(blocks: number[]): Promise<number[]> {
    const { a, b } = this;
    const sb = b.sb;
    const inUse: number[] = [];
    const bitmaps = new Map<string, Uint8Array | null>();
    for (const blk of blocks) {
      const g = Math.floor((blk - sb.firstDataBlock) / sb.blocksPerGroup);
      const bit = (blk - sb.firstDataBlock) % sb.blocksPerGroup;
      let used = false;
      for (const [side, fs] of [["a", a], ["b", b]] as const) {
        const key = `${side}${g}`;
        if (!bitmaps.has(key)) {
          const d = fs.groups[g];
          bitmaps.set(key, !d || d.flags & BG_BLOCK_UNINIT ? null : await fs.reader.block(d.blockBitmap));
        }
        const map = bitmaps.get(key);
        if (map && map[bit >> 3]! & (1 << (bit & 7))) used = true;
      }
      if (used) inUse.push(blk);
    }
    if (inUse.length === 0) return [];
    const found = new Set<number>();
    const wanted = new Set(inUse);
    const owns = async (ino: number, blk: number) => {
      if (ino < 1 || ino > sb.inodesCount) return false;
      const inode = await b.inode(ino);
      if (!inodeInUse(inode) || !isDir(inode)) return false;
      const map = await b.blockMap(inode);
      return map.meta.includes(blk) || map.runs.some((r) => blk >= r.physical && blk < r.physical + r.count);
    };
    // A directory block names its owner: its "." entry (a first block), or a subdirectory's "..".
    for (const blk of inUse) {
      let entries: DirEntry[];
      try {
        entries = b.parseEntries(await b.reader.block(blk), "not a directory block");
      } catch {
        continue;
      }
      const candidates = new Set<number>();
      for (const e of entries) if (e.name === ".") candidates.add(e.ino);
      for (const e of entries.filter((x) => x.kind === "dir" && x.name !== "." && x.name !== "..").slice(0, 8)) {
        const child = await b.inode(e.ino);
        if (isDir(child) && inodeInUse(child)) candidates.add((await b.listDir(child)).parent);
      }
      for (const c of candidates) {
        if (await owns(c, blk)) {
          found.add(c);
          wanted.delete(blk);
          break;
        }
      }
      // Else a block of files' entries: its directory is most likely numbered just before them.
      const file = entries.find((e) => e.name !== "." && e.name !== "..");
      if (!wanted.has(blk) || !file) continue;
      let tried = 0;
      for await (const dir of this.nearestDirectories(file.ino)) {
        if (++tried > MAX_OWNER_GUESSES) break;
        if (await owns(dir.ino, blk)) {
          found.add(dir.ino);
          wanted.delete(blk);
          break;
        }
      }
    }
    if (wanted.size === 0) return [...found];
    this.stats.ownerScan = true;
    for (let g = 0; g < sb.groupCount && wanted.size > 0; g++) {
      for (const inode of await b.groupInodes(g)) {
        const map = await b.blockMap(inode);
        const hit = [...wanted].filter((blk) => map.meta.includes(blk) || map.runs.some((r) => blk >= r.physical && blk < r.physical + r.count));
        if (hit.length === 0) continue;
        // A reserved inode's blocks (the resize inode's, say) are file system metadata.
        if (inode.ino >= sb.firstIno || inode.ino === ROOT_INO) found.add(inode.ino);
        for (const blk of hit) wanted.delete(blk);
      }
    }
    this.notes.push(
      `${inUse.length} changed block(s) in use belonged to no changed inode (written before or after their inode reached the disk): ` +
        `their owners were found by scanning the inode tables${wanted.size ? `; ${wanted.size} belong to no file` : ""}.`,
    );
    return [...found];
  }

  /**
   * Directories at B nearest the inode `ino` in the inode tables: those numbered just before it
   * first (nearest first, into the previous group's table when its own group starts: a parent
   * filled its group and its files went on in the next), then those after it in its group. Reads
   * the tables a window at a time, lazily.
   */
  async *nearestDirectories(ino: number): AsyncGenerator<Inode> {
    const sb = this.b.sb;
    const perWindow = Math.max(1, Math.floor(WINDOW_BYTES / sb.inodeSize));
    const g = Math.floor((ino - 1) / sb.inodesPerGroup);
    const here = Math.floor(((ino - 1) % sb.inodesPerGroup) / perWindow);
    const windowsOf = (group: number) => Math.ceil(this.usedInodes(group) / perWindow);
    const order: [number, number][] = Array.from({ length: here + 1 }, (_, i) => [g, here - i]);
    if (g > 0) for (let w = windowsOf(g - 1) - 1; w >= 0; w--) order.push([g - 1, w]);
    for (let w = here + 1; w < windowsOf(g); w++) order.push([g, w]);
    for (const [group, w] of order) {
      const used = this.usedInodes(group);
      const dirs = (await this.tableWindow(group, w * perWindow, Math.min(used, (w + 1) * perWindow))).filter(isDir);
      // Below the inode, nearest first; then above it.
      dirs.sort((p, q) => ((p.ino <= ino) !== (q.ino <= ino) ? (p.ino <= ino ? -1 : 1) : p.ino <= ino ? q.ino - p.ino : p.ino - q.ino));
      yield* dirs;
    }
  }

  /** Inodes of group `g`'s table in use or not: the count before its never-used tail. */
  usedInodes(g: number): number {
    const d = this.b.groups[g]!;
    if (d.flags & BG_INODE_UNINIT) return 0;
    return Math.max(0, this.b.sb.inodesPerGroup - Math.min(d.itableUnused, this.b.sb.inodesPerGroup));
  }

  /** In-use inodes [from, to) of group `g`'s table at B (one read of the blocks they are in). */
  async tableWindow(g: number, from: number, to: number): Promise<Inode[]> {
    const sb = this.b.sb;
    if (to <= from) return [];
    const inos = Array.from({ length: to - from }, (_, i) => g * sb.inodesPerGroup + from + i + 1).filter((n) => n <= sb.inodesCount);
    return (await this.b.inodes(inos)).filter((inode) => inodeInUse(inode));
  }

  async pathAt(side: "a" | "b", ino: number): Promise<string | null> {
    return side === "a" ? this.a.pathOfDir(ino, this.pathsA) : this.b.pathOfDir(ino, this.pathsB);
  }

  /** One directory's entries at A and B, when it is the same directory at the same path. */
  async compareDirectory(ino: number): Promise<void> {
    const [x, y] = this.changedInodes.get(ino)!;
    const [pa, pb] = await Promise.all([this.pathAt("a", ino), this.pathAt("b", ino)]);
    if (pa === null || pb === null) {
      this.notes.push(`Directory inode ${ino} could not be named at ${pa === null ? "A" : "B"}: its changes are shown through its parent, if at all.`);
      return;
    }
    // Moved or renamed: its parents' entries changed, and report its whole tree there.
    if (pa !== pb) return;
    this.stats.directoriesCompared++;
    await this.compareAttributes(pa, x, y);
    await this.compareListings(pa, x, y);
  }

  /** Entries of two versions of the directory at `path`. */
  async compareListings(path: string, x: Inode, y: Inode): Promise<void> {
    const [la, lb] = await Promise.all([this.a.listDir(x), this.b.listDir(y)]);
    const byName = new Map(lb.entries.map((e) => [e.name, e]));
    const namesA = new Set<string>();
    for (const ea of la.entries) {
      namesA.add(ea.name);
      const eb = byName.get(ea.name);
      const child = joinPath(path, ea.name);
      if (!eb) await this.tree("removed", this.a, await this.a.inode(ea.ino), child);
      else if (eb.ino !== ea.ino) await this.comparePath(child, await this.a.inode(ea.ino), await this.b.inode(eb.ino));
    }
    for (const eb of lb.entries) {
      if (!namesA.has(eb.name)) await this.tree("added", this.b, await this.b.inode(eb.ino), joinPath(path, eb.name));
    }
  }

  /** A path and everything under it, added at B or removed from A. */
  async tree(change: "added" | "removed", fs: Ext4, inode: Inode, path: string): Promise<void> {
    for await (const item of fs.walkFrom(inode, path)) {
      const kind = kindOfMode(item.inode.mode);
      const size = sized(kind) ? { [change === "added" ? "newSize" : "oldSize"]: item.inode.size } : {};
      this.out.add({ path: item.path, change, kind, what: [], ...size });
    }
  }

  /** The same path at both points, naming inodes `x` at A and `y` at B (maybe different inodes). */
  async comparePath(path: string, x: Inode, y: Inode): Promise<void> {
    if (kindOfMode(x.mode) !== kindOfMode(y.mode)) {
      await this.tree("removed", this.a, x, path);
      await this.tree("added", this.b, y, path);
      return;
    }
    await this.compareAttributes(path, x, y);
    if (isDir(x) && x.ino !== y.ino) await this.compareListings(path, x, y);
  }

  /** Fields of one path's two inodes (same kind); adds a "modified" change if any differ. */
  async compareAttributes(path: string, x: Inode, y: Inode): Promise<void> {
    const kind = kindOfMode(y.mode);
    const what: ChangedField[] = [];
    if ((x.mode & 0o7777) !== (y.mode & 0o7777)) what.push("mode");
    if (x.uid !== y.uid) what.push("uid");
    if (x.gid !== y.gid) what.push("gid");
    if (kind === "file") {
      if (x.size !== y.size) what.push("size");
      if (await this.contentDiffers(x, y)) what.push("content");
    } else if (kind === "symlink") {
      const [ta, tb] = await Promise.all([this.a.readlink(x), this.b.readlink(y)]);
      if (ta !== tb) what.push("target");
    }
    if (what.length === 0) return;
    this.out.add({ path, change: "modified", kind, what, ...(sized(kind) ? { oldSize: x.size, newSize: y.size } : {}) });
  }

  /** Whether two files' bytes differ: blocks at the same place that did not change are equal unread. */
  async contentDiffers(x: Inode, y: Inode): Promise<boolean> {
    if (x.size !== y.size) return true;
    if (x.size === 0) return false;
    const [ma, mb] = await Promise.all([this.a.blockMap(x), this.b.blockMap(y)]);
    const bs = this.b.blockSize;
    const blocks = Math.ceil(x.size / bs);
    const ranges = ma.inline || mb.inline ? [[0, blocks] as [number, number]] : differingRanges(ma.runs, mb.runs, blocks, this.changed);
    for (const [from, to] of ranges) {
      for (let at = from * bs; at < Math.min(to * bs, x.size); at += COMPARE_PIECE) {
        const length = Math.min(COMPARE_PIECE, to * bs - at);
        const [pa, pb] = await Promise.all([this.a.read(x, at, length), this.b.read(y, at, length)]);
        if (!equalBytes(pa, pb)) return true;
      }
    }
    return false;
  }

  /**
   * Changed inodes other than directories: found by name (same path, same inode at both points)
   * and compared.
   */
  async compareFiles(files: number[]): Promise<void> {
    if (files.length === 0) return;
    const wanted = new Map<number, number>(); // ino → names still to find at B
    for (const ino of files) wanted.set(ino, Math.max(1, this.changedInodes.get(ino)![1].linksCount));
    const names = new Map<number, { dir: number; name: string }[]>();
    const indexListing = (dir: number, listing: Listing) => {
      for (const e of listing.entries) {
        const need = wanted.get(e.ino);
        if (need === undefined) continue;
        const list = names.get(e.ino) ?? [];
        if (list.some((n) => n.dir === dir && n.name === e.name)) continue;
        list.push({ dir, name: e.name });
        names.set(e.ino, list);
        if (need <= 1) wanted.delete(e.ino);
        else wanted.set(e.ino, need - 1);
      }
    };
    // Directories read already at B (by this diff, or earlier ones on the same view).
    for (const [dir, listing] of [...this.b.cachedListings()]) indexListing(dir, listing);
    const listed = new Set<number>();
    const list = async (dir: Inode) => {
      if (listed.has(dir.ino)) return;
      listed.add(dir.ino);
      this.stats.nameSearchDirs++;
      indexListing(dir.ino, await this.b.listDir(dir));
    };
    // Search at B, nearest first: the directories whose inodes come just before the file's in its
    // group's table (mke2fs -d and ext4 both number a directory's files after it, and keep them in
    // its group when they can), then the rest of that group, then every other group.
    const sb = this.b.sb;
    for (const ino of [...wanted.keys()].sort((x, y) => y - x)) {
      if (!wanted.has(ino)) continue;
      for await (const dir of this.nearestDirectories(ino)) {
        await list(dir);
        if (!wanted.has(ino)) break;
      }
    }
    for (let g = 0; g < sb.groupCount && wanted.size > 0; g++) {
      for (const inode of await this.b.groupInodes(g)) {
        if (!isDir(inode)) continue;
        await list(inode);
        if (wanted.size === 0) break;
      }
    }
    for (const ino of files) {
      const [x, y] = this.changedInodes.get(ino)!;
      for (const { dir, name } of names.get(ino) ?? []) {
        const pb = await this.pathAt("b", dir);
        if (pb === null) continue;
        const pa = await this.pathAt("a", dir);
        if (pa !== pb) continue; // the directory moved: reported as a removed and an added tree
        const dirA = await this.a.inode(dir);
        if (!isDir(dirA) || !inodeInUse(dirA)) continue;
        const entryA = (await this.a.listDir(dirA)).entries.find((e) => e.name === name);
        if (entryA?.ino !== ino) continue; // a different file at A: the directory's comparison has it
        await this.comparePath(joinPath(pb, name), x, y);
      }
    }
  }
}

/**
 * Logical block ranges [from, to) of a file whose bytes may differ between two maps: where the
 * physical blocks differ, or are the same blocks but changed (`changed` null: every block counts
 * as changed). Holes and uninitialized extents are zeros on both sides. Walks run boundaries, so
 * the cost follows the mapped blocks, not the (possibly damaged) size.
 */
export function differingRanges(ra: Run[], rb: Run[], blocks: number, changed: Set<number> | null): [number, number][] {
  const edges = new Set<number>([0]);
  let mappedEnd = 0;
  for (const r of [...ra, ...rb]) {
    edges.add(r.logical);
    edges.add(r.logical + r.count);
    if (!r.uninit) mappedEnd = Math.max(mappedEnd, r.logical + r.count);
  }
  const end = Math.min(blocks, mappedEnd);
  const cuts = [...edges].filter((e) => e < end).sort((x, y) => x - y);
  cuts.push(end);
  const find = (runs: Run[], l: number): number => {
    let lo = 0;
    let hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = runs[mid]!;
      if (l < r.logical) hi = mid - 1;
      else if (l >= r.logical + r.count) lo = mid + 1;
      else return r.uninit ? 0 : r.physical + (l - r.logical);
    }
    return 0;
  };
  const out: [number, number][] = [];
  const mark = (from: number, to: number) => {
    const last = out.at(-1);
    if (last && last[1] === from) last[1] = to;
    else out.push([from, to]);
  };
  for (let i = 0; i + 1 < cuts.length; i++) {
    const [from, to] = [cuts[i]!, cuts[i + 1]!];
    // Inside a segment each side is one run or one hole, so its blocks move together.
    const pa = find(ra, from);
    const pb = find(rb, from);
    if (pa !== pb) mark(from, to);
    else if (pa !== 0) {
      for (let l = from; l < to; l++) if (changed === null || changed.has(pa + (l - from))) mark(l, l + 1);
    }
  }
  return out;
}

/** A listing entry of the whole tree: what the full-walk comparison compares. */
export interface ListedFile {
  ino: number;
  kind: FileKind;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  target?: string;
  inode: Inode;
}

/** Every path of a file system with its fields (the baseline: a full walk). */
export async function fullListing(fs: Ext4): Promise<Map<string, ListedFile>> {
  const out = new Map<string, ListedFile>();
  for await (const { path, inode } of fs.walk("/")) {
    const kind = kindOfMode(inode.mode);
    out.set(path, {
      ino: inode.ino,
      kind,
      mode: inode.mode,
      uid: inode.uid,
      gid: inode.gid,
      size: inode.size,
      inode,
      ...(kind === "symlink" ? { target: await fs.readlink(inode) } : {}),
    });
  }
  return out;
}

/**
 * The diff by walking both trees whole (the fallback when the geometry changed, and the
 * benchmark's baseline). Contents are compared only where the inode records differ (the inode's
 * mtime and size say a write happened; rsync's quick check): a write that bypassed the inode
 * is missed here, which the block-based diff does not miss.
 */
export async function fullDiff(a: Ext4, b: Ext4, notes: string[] = []): Promise<FileDiff> {
  const [la, lb] = await Promise.all([fullListing(a), fullListing(b)]);
  const out = new Changes();
  const stats: FileDiff["stats"] = { changedBlocks: 0, changedInodes: 0, directoriesCompared: 0, ownerScan: false, nameSearchDirs: 0 };
  for (const [path, x] of la) {
    const y = lb.get(path);
    if (!y || y.kind !== x.kind) out.add({ path, change: "removed", kind: x.kind, what: [], ...(sized(x.kind) ? { oldSize: x.size } : {}) });
    if (!y) continue;
    if (y.kind !== x.kind) {
      out.add({ path, change: "added", kind: y.kind, what: [], ...(sized(y.kind) ? { newSize: y.size } : {}) });
      continue;
    }
    const what: ChangedField[] = [];
    if ((x.mode & 0o7777) !== (y.mode & 0o7777)) what.push("mode");
    if (x.uid !== y.uid) what.push("uid");
    if (x.gid !== y.gid) what.push("gid");
    if (x.kind === "file") {
      if (x.size !== y.size) what.push("size");
      if (x.size !== y.size || (!equalBytes(x.inode.raw, y.inode.raw) && (await contentsDiffer(a, b, x.inode, y.inode)))) what.push("content");
    }
    if (x.kind === "symlink" && x.target !== y.target) what.push("target");
    if (what.length) out.add({ path, change: "modified", kind: x.kind, what, ...(sized(x.kind) ? { oldSize: x.size, newSize: y.size } : {}) });
  }
  for (const [path, y] of lb) {
    if (!la.has(path)) out.add({ path, change: "added", kind: y.kind, what: [], ...(sized(y.kind) ? { newSize: y.size } : {}) });
  }
  return { changes: out.list(), notes, stats };
}

async function contentsDiffer(a: Ext4, b: Ext4, x: Inode, y: Inode): Promise<boolean> {
  const [ma, mb] = await Promise.all([a.blockMap(x), b.blockMap(y)]);
  const bs = a.blockSize;
  const ranges = ma.inline || mb.inline ? [[0, Math.ceil(x.size / bs)] as [number, number]] : differingRanges(ma.runs, mb.runs, Math.ceil(x.size / bs), null);
  for (const [from, to] of ranges) {
    for (let at = from * bs; at < Math.min(to * bs, x.size); at += COMPARE_PIECE) {
      const length = Math.min(COMPARE_PIECE, to * bs - at);
      const [pa, pb] = await Promise.all([a.read(x, at, length), b.read(y, at, length)]);
      if (!equalBytes(pa, pb)) return true;
    }
  }
  return false;
}
