/**
 * A read-only ext2/ext3/ext4 reader over any BlockDevice (layouts: ext4-format.ts). One Ext4 is
 * one file system as it is at one point: what it has read is cached and never changes.
 * Every loop and length is bounded by the file system's geometry, so a damaged image ends in an
 * UnreadableDiskError, never a hang or a huge allocation.
 */
import { BlockReader, type BlockDevice } from "./block-device.ts";
import {
  check,
  COMPAT_HAS_JOURNAL,
  descriptorLocation,
  DIRENT_TYPE_MODE,
  EXTENT_MAGIC,
  INCOMPAT_FILETYPE,
  INCOMPAT_RECOVER,
  INODE_FLAG_EXTENTS,
  INODE_FLAG_INLINE_DATA,
  inlineDataTail,
  inodeInUse,
  kindOfMode,
  parseGroupDesc,
  parseInode,
  parseSuperblock,
  ROOT_INO,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  SUPERBLOCK_OFFSET,
  BG_INODE_UNINIT,
  UnreadableDiskError,
  type FileKind,
  type GroupDesc,
  type Inode,
  type Superblock,
} from "./ext4-format.ts";
import { replayJournal, type JournalState } from "./journal.ts";

/** Logical blocks [logical, logical + count) are physical [physical, physical + count). */
export interface Run {
  logical: number;
  physical: number;
  count: number;
  /** An uninitialized extent: reads as zeros. */
  uninit: boolean;
}

/** Where a file's bytes are: data runs (holes are absent) and the blocks of the map itself. */
export interface BlockMap {
  runs: Run[];
  /** Extent tree nodes or indirect blocks (not the root in i_block). */
  meta: number[];
  /** Data is in the inode (inline data): no runs. */
  inline: boolean;
}

export interface DirEntry {
  name: string;
  ino: number;
  /** From the entry's type byte when the file system records it, else null (ask the inode). */
  kind: FileKind | null;
}

export interface Listing {
  entries: DirEntry[];
  /** The ".." entry's inode. */
  parent: number;
}

/** What stat says about a path. */
export interface FileStat {
  path: string;
  ino: number;
  kind: FileKind;
  /** Permission bits and type, as in st_mode. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  links: number;
  /** A symlink's target. */
  target?: string;
}

/** Longest symlink target read (the kernel's limit is one page). */
const MAX_LINK = 4096;
/** Deepest extent tree accepted (the kernel allows 5 levels). */
const MAX_EXTENT_DEPTH = 5;
/** Block maps kept per file system view. */
const MAP_CACHE = 4096;
/** Directory listings kept per file system view. */
const LISTING_CACHE = 8192;
/** Path components followed at most (a loop in a damaged tree ends there). */
const MAX_PATH_DEPTH = 4096;

export interface OpenOptions {
  /** Replay the journal if the file system needs recovery (default true). */
  replay?: boolean;
  cacheBytes?: number;
}

export class Ext4 {
  private readonly maps = new Map<number, BlockMap>();
  private readonly listings = new Map<number, Listing>();
  /**
   * Set by a diff while it runs: the other point's listing of a directory that is the same at
   * both points (so an unchanged directory is parsed once per diff).
   */
  shareListing: ((inode: Inode) => Promise<Listing | undefined>) | undefined;
  /** The journal's state at this point (replayed in memory, never written). */
  journal: JournalState = { present: false, replayed: false, transactions: 0, blocks: 0, uncommitted: false };

  private constructor(
    readonly reader: BlockReader,
    public sb: Superblock,
    public groups: GroupDesc[],
  ) {}

  /** Opens the file system on `device` (a partition or whole disk); throws UnreadableDiskError. */
  static async open(device: BlockDevice, options: OpenOptions = {}): Promise<Ext4> {
    const read = async () => {
      check(device.size >= SUPERBLOCK_OFFSET + 1024, "the disk is too small to hold a file system");
      return parseSuperblock(await device.read(SUPERBLOCK_OFFSET, 1024), device.size);
    };
    let sb = await read();
    const reader = new BlockReader(device, sb.blockSize, sb.blocksCount, options.cacheBytes);
    const fs = new Ext4(reader, sb, await Ext4.readGroups(reader, sb));
    if (options.replay !== false && sb.compat & COMPAT_HAS_JOURNAL && sb.journalInum !== 0) {
      const journal = await fs.inode(sb.journalInum);
      const map = await fs.blockMap(journal);
      const length = Math.ceil(journal.size / sb.blockSize);
      const lookup = runLookup(map.runs);
      const { overlay, state } = await replayJournal(
        { blockSize: sb.blockSize, length, map: lookup, read: (blocks) => reader.blocks(blocks, false) },
        (sb.incompat & INCOMPAT_RECOVER) !== 0,
      );
      fs.journal = state;
      if (overlay.size > 0) {
        reader.overlay = overlay;
        // The superblock and descriptors may be among the replayed blocks: read them again.
        const sbBlock = Math.floor(SUPERBLOCK_OFFSET / sb.blockSize);
        const within = SUPERBLOCK_OFFSET % sb.blockSize;
        sb = parseSuperblock((await reader.block(sbBlock)).subarray(within, within + 1024), device.size);
        reader.blockCount = sb.blocksCount;
        fs.sb = sb;
        fs.groups = await Ext4.readGroups(reader, sb);
        fs.maps.clear();
      }
    }
    return fs;
  }

  private static async readGroups(reader: BlockReader, sb: Superblock): Promise<GroupDesc[]> {
    const locations = Array.from({ length: sb.groupCount }, (_, g) => descriptorLocation(sb, g));
    const blocks = await reader.blocks([...new Set(locations.map(([b]) => b))]);
    const byBlock = new Map<number, Uint8Array>();
    [...new Set(locations.map(([b]) => b))].forEach((b, i) => byBlock.set(b, blocks[i]!));
    const itBlocks = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / sb.blockSize);
    return locations.map(([block, offset], g) => {
      const desc = parseGroupDesc(byBlock.get(block)!.subarray(offset, offset + sb.descSize), sb.descSize);
      check(desc.inodeTable > 0 && desc.inodeTable + itBlocks <= sb.blocksCount, `group ${g}'s inode table is outside the file system`);
      return desc;
    });
  }

  get blockSize(): number {
    return this.sb.blockSize;
  }

  /** Blocks of one group's inode table. */
  get inodeTableBlocks(): number {
    return Math.ceil((this.sb.inodesPerGroup * this.sb.inodeSize) / this.sb.blockSize);
  }

  /** The block and byte offset of inode `ino`'s record. */
  inodeLocation(ino: number): { block: number; offset: number } {
    check(Number.isSafeInteger(ino) && ino >= 1 && ino <= this.sb.inodesCount, `inode ${ino} is outside the file system`);
    const group = Math.floor((ino - 1) / this.sb.inodesPerGroup);
    const index = (ino - 1) % this.sb.inodesPerGroup;
    const byte = index * this.sb.inodeSize;
    return { block: this.groups[group]!.inodeTable + Math.floor(byte / this.sb.blockSize), offset: byte % this.sb.blockSize };
  }

  async inode(ino: number): Promise<Inode> {
    return (await this.inodes([ino]))[0]!;
  }

  /** Several inodes, their table blocks read in one batch. */
  async inodes(inos: readonly number[]): Promise<Inode[]> {
    const locations = inos.map((ino) => this.inodeLocation(ino));
    const blocks = await this.reader.blocks(locations.map((l) => l.block));
    return inos.map((ino, i) => parseInode(ino, blocks[i]!.subarray(locations[i]!.offset, locations[i]!.offset + this.sb.inodeSize), this.sb));
  }

  /**
   * The inodes in use in group `g` (its table up to the never-used tail), read as one run.
   * Groups whose table was never initialised have none.
   */
  async groupInodes(g: number): Promise<Inode[]> {
    const desc = this.groups[g]!;
    if (desc.flags & BG_INODE_UNINIT) return [];
    const used = Math.max(0, this.sb.inodesPerGroup - Math.min(desc.itableUnused, this.sb.inodesPerGroup));
    if (used === 0) return [];
    const blocks = Math.ceil((used * this.sb.inodeSize) / this.sb.blockSize);
    const table = await this.reader.run(desc.inodeTable, blocks);
    const out: Inode[] = [];
    for (let i = 0; i < used; i++) {
      const ino = g * this.sb.inodesPerGroup + i + 1;
      if (ino > this.sb.inodesCount) break;
      const inode = parseInode(ino, table.subarray(i * this.sb.inodeSize, (i + 1) * this.sb.inodeSize), this.sb);
      if (inodeInUse(inode) || ino === ROOT_INO) out.push(inode);
    }
    return out;
  }

  /** Where a file's data is (extent tree or block map), cached per inode. */
  async blockMap(inode: Inode): Promise<BlockMap> {
    const cached = this.maps.get(inode.ino);
    if (cached && cached.inline === ((inode.flags & INODE_FLAG_INLINE_DATA) !== 0)) return cached;
    const map = await this.computeMap(inode);
    if (this.maps.size >= MAP_CACHE) this.maps.delete(this.maps.keys().next().value!);
    this.maps.set(inode.ino, map);
    return map;
  }

  private async computeMap(inode: Inode): Promise<BlockMap> {
    if (inode.flags & INODE_FLAG_INLINE_DATA) return { runs: [], meta: [], inline: true };
    const type = inode.mode & S_IFMT;
    // Devices, fifos, sockets and fast symlinks keep other things in i_block.
    if (type !== S_IFDIR && type !== S_IFLNK && kindOfMode(inode.mode) === "other") return { runs: [], meta: [], inline: false };
    if (type === S_IFLNK && this.isFastSymlink(inode)) return { runs: [], meta: [], inline: false };
    const logicalBlocks = Math.ceil(inode.size / this.sb.blockSize);
    if (inode.flags & INODE_FLAG_EXTENTS) return this.extentMap(inode, logicalBlocks);
    return this.indirectMap(inode, logicalBlocks);
  }

  private isFastSymlink(inode: Inode): boolean {
    const eaBlocks = inode.fileAcl !== 0 ? this.sb.blockSize / 512 : 0;
    return inode.blocks - eaBlocks === 0 && inode.size < 60;
  }

  private async extentMap(inode: Inode, logicalBlocks: number): Promise<BlockMap> {
    const runs: Run[] = [];
    const meta: number[] = [];
    let level: { node: Uint8Array; depth: number }[] = [{ node: inode.iBlock, depth: -1 }];
    for (let round = 0; level.length > 0; round++) {
      check(round <= MAX_EXTENT_DEPTH, `inode ${inode.ino}'s extent tree is too deep`);
      const children: number[] = [];
      const depths: number[] = [];
      for (const { node, depth: expected } of level) {
        const v = new DataView(node.buffer, node.byteOffset, node.byteLength);
        check(v.getUint16(0, true) === EXTENT_MAGIC, `inode ${inode.ino}'s extent tree is damaged`);
        const entries = v.getUint16(2, true);
        const depth = v.getUint16(6, true);
        check(12 + entries * 12 <= node.byteLength && depth <= MAX_EXTENT_DEPTH, `inode ${inode.ino}'s extent tree is damaged`);
        check(expected < 0 || depth === expected, `inode ${inode.ino}'s extent tree is damaged`);
        for (let i = 0; i < entries; i++) {
          const at = 12 + i * 12;
          if (depth > 0) {
            children.push(v.getUint32(at + 4, true) + v.getUint16(at + 8, true) * 2 ** 32);
            depths.push(depth - 1);
          } else {
            const logical = v.getUint32(at, true);
            let count = v.getUint16(at + 4, true);
            const uninit = count > 32768;
            if (uninit) count -= 32768;
            const physical = v.getUint32(at + 8, true) + v.getUint16(at + 6, true) * 2 ** 32;
            if (count === 0 || logical >= logicalBlocks) continue;
            count = Math.min(count, logicalBlocks - logical);
            check(physical > 0 && physical + count <= this.sb.blocksCount, `inode ${inode.ino} points outside the file system`);
            runs.push({ logical, physical, count, uninit });
          }
        }
      }
      check(meta.length + children.length <= this.sb.blocksCount, `inode ${inode.ino}'s extent tree is damaged`);
      meta.push(...children);
      const nodes = await this.reader.blocks(children);
      level = nodes.map((node, i) => ({ node, depth: depths[i]! }));
    }
    runs.sort((a, b) => a.logical - b.logical);
    return { runs, meta, inline: false };
  }

  private async indirectMap(inode: Inode, logicalBlocks: number): Promise<BlockMap> {
    const per = this.sb.blockSize / 4;
    const v = new DataView(inode.iBlock.buffer, inode.iBlock.byteOffset, 60);
    const pointers: [number, number][] = []; // [logical, physical]
    const meta: number[] = [];
    for (let i = 0; i < 12 && i < logicalBlocks; i++) {
      const p = v.getUint32(i * 4, true);
      if (p) pointers.push([i, p]);
    }
    // Each level: blocks of pointers, each covering `span` logical blocks from `first`.
    let level: { block: number; first: number; span: number }[] = [];
    let first = 12;
    for (let k = 0, span = 1; k < 3; k++, span *= per) {
      const p = v.getUint32((12 + k) * 4, true);
      if (p && first < logicalBlocks) level.push({ block: p, first, span });
      first += span * per;
    }
    while (level.length > 0) {
      for (const l of level) check(l.block < this.sb.blocksCount, `inode ${inode.ino} points outside the file system`);
      meta.push(...level.map((l) => l.block));
      check(meta.length <= this.sb.blocksCount, `inode ${inode.ino}'s block map is damaged`);
      const blocks = await this.reader.blocks(level.map((l) => l.block));
      const nextLevel: typeof level = [];
      level.forEach((l, i) => {
        const b = blocks[i]!;
        const bv = new DataView(b.buffer, b.byteOffset, b.byteLength);
        for (let j = 0; j < per; j++) {
          const logical = l.first + j * l.span;
          if (logical >= logicalBlocks) break;
          const p = bv.getUint32(j * 4, true);
          if (!p) continue;
          if (l.span === 1) pointers.push([logical, p]);
          else nextLevel.push({ block: p, first: logical, span: l.span / per });
          check(pointers.length + nextLevel.length <= this.sb.blocksCount, `inode ${inode.ino}'s block map is damaged`);
        }
      });
      level = nextLevel;
    }
    const runs: Run[] = [];
    pointers.sort((a, b) => a[0] - b[0]);
    for (const [logical, physical] of pointers) {
      check(physical < this.sb.blocksCount, `inode ${inode.ino} points outside the file system`);
      const last = runs.at(-1);
      if (last && last.logical + last.count === logical && last.physical + last.count === physical) last.count++;
      else runs.push({ logical, physical, count: 1, uninit: false });
    }
    return { runs, meta, inline: false };
  }

  /** `length` bytes of a file from `offset` (cut at its size); holes and uninit extents are zeros. */
  async read(inode: Inode, offset: number, length: number): Promise<Uint8Array> {
    const end = Math.min(inode.size, offset + length);
    if (end <= offset) return new Uint8Array(0);
    const out = new Uint8Array(end - offset);
    if (inode.flags & INODE_FLAG_INLINE_DATA) {
      const all = concatInline(inode);
      out.set(all.subarray(offset, Math.min(end, all.byteLength)));
      return out;
    }
    const map = await this.blockMap(inode);
    const bs = this.sb.blockSize;
    const firstLogical = Math.floor(offset / bs);
    const lastLogical = Math.floor((end - 1) / bs);
    const wanted: { logical: number; physical: number }[] = [];
    for (const run of map.runs) {
      if (run.uninit || run.logical + run.count <= firstLogical || run.logical > lastLogical) continue;
      const from = Math.max(run.logical, firstLogical);
      const to = Math.min(run.logical + run.count - 1, lastLogical);
      for (let l = from; l <= to; l++) wanted.push({ logical: l, physical: run.physical + (l - run.logical) });
    }
    const blocks = await this.reader.blocks(wanted.map((w) => w.physical));
    wanted.forEach(({ logical }, i) => {
      const blockStart = logical * bs;
      const from = Math.max(offset, blockStart);
      const to = Math.min(end, blockStart + bs);
      out.set(blocks[i]!.subarray(from - blockStart, to - blockStart), from - offset);
    });
    return out;
  }

  /** A symlink's target. */
  async readlink(inode: Inode): Promise<string> {
    check((inode.mode & S_IFMT) === S_IFLNK, `inode ${inode.ino} is not a symlink`);
    const size = Math.min(inode.size, MAX_LINK);
    if (!(inode.flags & INODE_FLAG_INLINE_DATA) && this.isFastSymlink(inode)) return decodeName(inode.iBlock.subarray(0, size));
    return decodeName(await this.read(inode, 0, size));
  }

  /** A directory's entries ("." and ".." left out), cached. */
  async listDir(inode: Inode): Promise<Listing> {
    const cached = this.listings.get(inode.ino);
    if (cached) return cached;
    check((inode.mode & S_IFMT) === S_IFDIR, `inode ${inode.ino} is not a directory`);
    const shared = await this.shareListing?.(inode);
    if (shared) {
      this.adoptListing(inode.ino, shared);
      return shared;
    }
    const entries: DirEntry[] = [];
    let parent = 0;
    const parse = (area: Uint8Array, what: string) => {
      for (const e of this.parseEntries(area, `directory ${inode.ino} is damaged (${what})`)) {
        if (e.name === "..") parent = e.ino;
        else if (e.name !== ".") entries.push(e);
      }
    };
    if (inode.flags & INODE_FLAG_INLINE_DATA) {
      parent = new DataView(inode.iBlock.buffer, inode.iBlock.byteOffset).getUint32(0, true);
      parse(inode.iBlock.subarray(4, 60), "inline");
      const tail = inlineDataTail(inode);
      if (tail.byteLength > 0) parse(tail, "inline");
    } else {
      const map = await this.blockMap(inode);
      const bs = this.sb.blockSize;
      // Blocks in batches, so a huge directory does not hold every block at once.
      const all = map.runs.filter((r) => !r.uninit).flatMap((r) => Array.from({ length: r.count }, (_, i) => r.physical + i));
      for (let i = 0; i < all.length; i += 256) {
        const blocks = await this.reader.blocks(all.slice(i, i + 256));
        blocks.forEach((b, k) => parse(b.subarray(0, bs), `block ${all[i + k]}`));
      }
    }
    const listing = { entries, parent };
    if (this.listings.size >= LISTING_CACHE) this.listings.delete(this.listings.keys().next().value!);
    this.listings.set(inode.ino, listing);
    return listing;
  }

  /**
   * The entries of one area of directory entries (a block, or inline data), "." and ".." included;
   * throws UnreadableDiskError(`damaged`) when the chain of entries is broken.
   */
  parseEntries(area: Uint8Array, damaged: string): DirEntry[] {
    const filetype = (this.sb.incompat & INCOMPAT_FILETYPE) !== 0;
    const v = new DataView(area.buffer, area.byteOffset, area.byteLength);
    const entries: DirEntry[] = [];
    for (let at = 0; at + 8 <= area.byteLength; ) {
      const ino = v.getUint32(at, true);
      let recLen = v.getUint16(at + 4, true);
      if (recLen === 65535 || recLen === 0) recLen = area.byteLength === 65536 ? 65536 : recLen;
      const nameLen = filetype ? area[at + 6]! : v.getUint16(at + 6, true);
      check(recLen >= 8 && recLen % 4 === 0 && at + recLen <= area.byteLength && 8 + nameLen <= recLen, damaged);
      if (ino !== 0) {
        check(ino <= this.sb.inodesCount, `${damaged}: it names inode ${ino}, outside the file system`);
        const type = filetype ? area[at + 7]! : 0;
        const kind = type > 0 && type < DIRENT_TYPE_MODE.length ? kindOfMode(DIRENT_TYPE_MODE[type]!) : null;
        entries.push({ name: decodeName(area.subarray(at + 8, at + 8 + nameLen)), ino, kind });
      }
      at += recLen;
    }
    return entries;
  }

  /** A listing computed elsewhere (the other point, when the directory is the same there). */
  adoptListing(ino: number, listing: Listing): void {
    if (this.listings.size >= LISTING_CACHE) this.listings.delete(this.listings.keys().next().value!);
    this.listings.set(ino, listing);
  }

  /** Listings read so far at this point, by directory inode. */
  cachedListings(): IterableIterator<[number, Listing]> {
    return this.listings.entries();
  }

  /** Whether a listing for `ino` is cached (the diff shares listings between points). */
  cachedListing(ino: number): Listing | undefined {
    return this.listings.get(ino);
  }

  /** The inode at an absolute path (symlinks are not followed), or null if it does not exist. */
  async lookup(path: string): Promise<Inode | null> {
    const parts = splitPath(path);
    let inode = await this.inode(ROOT_INO);
    for (const part of parts) {
      if ((inode.mode & S_IFMT) !== S_IFDIR) return null;
      const entry = (await this.listDir(inode)).entries.find((e) => e.name === part);
      if (!entry) return null;
      inode = await this.inode(entry.ino);
    }
    return inode;
  }

  /** stat() of an inode, as the UI and CLI show it. */
  async statInode(inode: Inode, path: string): Promise<FileStat> {
    const kind = kindOfMode(inode.mode);
    return {
      path,
      ino: inode.ino,
      kind,
      mode: inode.mode,
      uid: inode.uid,
      gid: inode.gid,
      size: inode.size,
      mtime: inode.mtime,
      links: inode.linksCount,
      ...(kind === "symlink" ? { target: await this.readlink(inode) } : {}),
    };
  }

  /** stat() of a path, or null when it does not exist. */
  async stat(path: string): Promise<FileStat | null> {
    const inode = await this.lookup(path);
    return inode ? this.statInode(inode, normalizePath(path)) : null;
  }

  /**
   * Every path under `path` (itself included) with its inode, depth first, sorted by name.
   * Directories are visited once each (a damaged tree's loops end).
   */
  async *walk(path = "/"): AsyncGenerator<{ path: string; inode: Inode }> {
    const start = await this.lookup(path);
    if (!start) throw new UnreadableDiskError(`${path} does not exist at this point`);
    yield* this.walkFrom(start, normalizePath(path));
  }

  /** walk() from an inode already in hand, named `path`. */
  async *walkFrom(start: Inode, path: string): AsyncGenerator<{ path: string; inode: Inode }> {
    const seen = new Set<number>();
    const stack: { path: string; inode: Inode }[] = [{ path, inode: start }];
    while (stack.length > 0) {
      const item = stack.pop()!;
      yield item;
      if ((item.inode.mode & S_IFMT) !== S_IFDIR || seen.has(item.inode.ino)) continue;
      seen.add(item.inode.ino);
      check(seen.size <= this.sb.inodesCount, "the directory tree is damaged");
      const entries = [...(await this.listDir(item.inode)).entries].sort((a, b) => (a.name < b.name ? 1 : a.name > b.name ? -1 : 0));
      const inodes = await this.inodes(entries.map((e) => e.ino));
      entries.forEach((e, i) => stack.push({ path: joinPath(item.path, e.name), inode: inodes[i]! }));
    }
  }

  /** The directory inode's path, through ".." and the parents' listings; null if it cannot be named. */
  async pathOfDir(ino: number, cache = new Map<number, string | null>()): Promise<string | null> {
    const chain: number[] = [];
    let current = ino;
    let path: string | null | undefined;
    for (let depth = 0; ; depth++) {
      if (depth > MAX_PATH_DEPTH) return null;
      if (current === ROOT_INO) {
        path = "/";
        break;
      }
      const known = cache.get(current);
      if (known !== undefined) {
        path = known;
        break;
      }
      chain.push(current);
      const inode = await this.inode(current);
      if ((inode.mode & S_IFMT) !== S_IFDIR || !inodeInUse(inode)) {
        path = null;
        break;
      }
      current = (await this.listDir(inode)).parent;
      if (current === 0) {
        path = null;
        break;
      }
    }
    // Name each directory of the chain in its parent, from the top down.
    for (let i = chain.length - 1; i >= 0; i--) {
      const child = chain[i]!;
      if (path !== null) {
        const parentIno = i + 1 < chain.length ? chain[i + 1]! : current;
        const parent = await this.inode(parentIno);
        const entry = (await this.listDir(parent)).entries.find((e) => e.ino === child);
        path = entry ? joinPath(path, entry.name) : null;
      }
      cache.set(child, path);
    }
    return path;
  }
}

/** Inline data: i_block's 60 bytes then the system.data attribute. */
function concatInline(inode: Inode): Uint8Array {
  const tail = inlineDataTail(inode);
  const out = new Uint8Array(60 + tail.byteLength);
  out.set(inode.iBlock, 0);
  out.set(tail, 60);
  return out.subarray(0, Math.min(out.byteLength, inode.size));
}

/** A sorted run list as a lookup function (journal blocks). */
export function runLookup(runs: Run[]): (logical: number) => number | null {
  return (logical) => {
    let lo = 0;
    let hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = runs[mid]!;
      if (logical < r.logical) hi = mid - 1;
      else if (logical >= r.logical + r.count) lo = mid + 1;
      else return r.physical + (logical - r.logical);
    }
    return null;
  };
}

const decoder = new TextDecoder();
function decodeName(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

export function splitPath(path: string): string[] {
  return path.split("/").filter((p) => p !== "" && p !== ".");
}

export function normalizePath(path: string): string {
  return "/" + splitPath(path).join("/");
}

export function joinPath(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}
