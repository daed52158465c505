/**
 * ext2/ext3/ext4 on disk: what Sandglass's read-only reader reads, in one place. All of ext4 is
 * little-endian; the journal (jbd2, journal.ts) is big-endian. Offsets are bytes from the start
 * of the structure. Names are the kernel's (fs/ext4/ext4.h, include/linux/jbd2.h).
 *
 * Partition tables (partitions.ts)
 *   MBR: sector 0 ends in 55 AA; four 16-byte entries at 446: +4 type (0xEE: a protective entry,
 *        the disk is GPT; 0x05/0x0F/0x85: an extended partition whose logical partitions are a
 *        chain of EBRs, each a sector with the same layout: entry 0 relative to that EBR, entry 1
 *        the next EBR relative to the extended partition), +8 first sector (u32), +12 sectors (u32).
 *   GPT: LBA 1 starts "EFI PART"; +72 entry array LBA (u64), +80 entry count (u32), +84 entry size
 *        (u32). Entry: +0 type GUID (all zero: unused), +32 first LBA (u64), +40 last LBA
 *        (inclusive), +56 name (UTF-16LE, 72 bytes).
 *   No table: the disk may be one file system (superblock magic at byte 1080). Every partition is
 *   probed for the magic; its type byte or GUID is not trusted.
 *
 * Superblock: 1024 bytes at byte 1024 of the file system, whatever the block size.
 *   0x00 s_inodes_count  0x04 s_blocks_count_lo  0x14 s_first_data_block (1 on 1 KiB blocks, else 0)
 *   0x18 s_log_block_size (block size = 1024 << n)  0x20 s_blocks_per_group  0x28 s_inodes_per_group
 *   0x38 s_magic (u16, 0xEF53)  0x3A s_state  0x4C s_rev_level (0: 128-byte inodes, first inode 11)
 *   0x54 s_first_ino  0x58 s_inode_size (u16)  0xCE s_reserved_gdt_blocks (u16)  0x5C s_feature_compat  0x60 s_feature_incompat
 *   0x64 s_feature_ro_compat  0x68 s_uuid[16]  0x78 s_volume_name[16]  0xE0 s_journal_inum
 *   0xE4 s_journal_dev  0xEC s_hash_seed[4]  0xFC s_def_hash_version  0xFE s_desc_size (u16)
 *   0x104 s_first_meta_bg  0x150 s_blocks_count_hi  0x174 s_log_groups_per_flex  0x24C s_backup_bgs[2]
 *
 * Group descriptors: a table of 32-byte entries (64-byte when INCOMPAT_64BIT and s_desc_size ≥ 64)
 * in the block(s) after the superblock's block; with META_BG, groups from s_first_meta_bg ×
 * (block size / descriptor size) on keep their descriptors in the first block of each meta group
 * (after that group's superblock backup, if it has one).
 *   0x00 bg_block_bitmap_lo  0x04 bg_inode_bitmap_lo  0x08 bg_inode_table_lo  0x12 bg_flags (u16:
 *   1 INODE_UNINIT, 2 BLOCK_UNINIT)  0x1C bg_itable_unused_lo (u16: inodes never used at the end of
 *   the group's table); 64-byte: 0x20 bg_block_bitmap_hi  0x24 bg_inode_bitmap_hi
 *   0x28 bg_inode_table_hi  0x32 bg_itable_unused_hi.
 *
 * Inodes: s_inode_size bytes each (128 or more), numbered from 1; inode n is entry (n-1) mod
 * s_inodes_per_group of group (n-1) div s_inodes_per_group's inode table.
 *   0x00 i_mode (u16: type in the top 4 bits)  0x02 i_uid  0x04 i_size_lo  0x0C i_ctime  0x10 i_mtime
 *   0x14 i_dtime  0x18 i_gid  0x1A i_links_count  0x1C i_blocks_lo  0x20 i_flags (0x1000 INDEX: htree
 *   directory; 0x40000 HUGE_FILE; 0x80000 EXTENTS; 0x10000000 INLINE_DATA; 0x200000 EA_INODE)
 *   0x28 i_block[15] (60 bytes: extent tree root, block map, fast symlink target or inline data)
 *   0x64 i_generation  0x68 i_file_acl_lo  0x6C i_size_high  0x74 i_blocks_high (u16)
 *   0x76 i_file_acl_high  0x78 i_uid_high  0x7A i_gid_high  0x80 i_extra_isize (u16), then the
 *   in-inode extended attributes from 0x80 + i_extra_isize: magic 0xEA020000, then entries of
 *   e_name_len (u8), e_name_index (u8), e_value_offs (u16, from the first entry), e_value_inum,
 *   e_value_size, e_hash (u32 each), the name padded to 4 bytes; a zero u32 ends the list.
 *   Size = i_size_lo + i_size_high × 2^32 for regular files (and directories with INCOMPAT_LARGEDIR).
 *
 * Block maps
 *   Extents (i_flags EXTENTS): a tree whose root is in i_block. Node: 12-byte header eh_magic
 *   (u16, 0xF30A), eh_entries, eh_max, eh_depth (u16 each), eh_generation; then 12-byte entries.
 *   Index (depth > 0): ei_block (first logical block), ei_leaf_lo (u32), ei_leaf_hi (u16). Leaf:
 *   ee_block, ee_len (u16; above 32768: an uninitialized extent of ee_len − 32768 blocks, which
 *   reads as zeros), ee_start_hi (u16), ee_start_lo (u32). Logical blocks no extent covers are
 *   holes (zeros). Non-root nodes are whole blocks (4 trailing checksum bytes with metadata_csum).
 *   Block map (ext2/ext3 style): i_block[0..11] direct, [12] single, [13] double, [14] triple
 *   indirect; blocks of u32 block numbers; 0 is a hole.
 *   Inline data (INCOMPAT_INLINE_DATA, i_flags INLINE_DATA): the first 60 bytes in i_block, the
 *   rest in the in-inode attribute "system.data" (name index 7, name "data").
 *
 * Directories: blocks of entries inode (u32), rec_len (u16; on 64 KiB blocks 0 or 65535 means the
 * whole block), name_len (u8), file_type (u8: 1 file, 2 dir, 3 char dev, 4 block dev, 5 fifo,
 * 6 socket, 7 symlink; without INCOMPAT_FILETYPE name_len is a u16 and the type comes from the
 * inode), name. Inode 0 is an unused slot. An htree directory (i_flags INDEX) is the same blocks
 * with index nodes hidden in them: block 0 holds "." and ".." with ".."'s rec_len covering the
 * index root, and interior index blocks are one empty entry spanning the block, so reading every
 * block as linear entries lists the directory. Lookups here scan linearly (the hash index is not
 * used). A metadata_csum leaf ends in a 12-byte entry with inode 0 (skipped like any unused slot).
 * An inline directory starts with the parent's inode number (u32), then entries.
 *
 * Symlinks: the target is in i_block when the inode has no data blocks (i_blocks minus its
 * attribute block, if any, is 0: a "fast" symlink), else in its first data block (or inline data).
 *
 * Not supported (refused with UnreadableDiskError, or noted): INCOMPAT_COMPRESSION, JOURNAL_DEV (an
 * external journal device itself), ENCRYPT (names and contents are ciphertext: refused), CASEFOLD
 * (names are read as stored; lookups are byte-exact), BIGALLOC (cluster allocation: refused),
 * EA_INODE values (large attributes are not read: nothing here needs them), external journals (the
 * file system is read without replay, and says so), fast-commit journal blocks (not replayed, like
 * a kernel without fast commits; the full commits before them are). Checksums (metadata_csum,
 * gdt_csum, journal csum v2/v3) are not verified: a damaged structure fails its own sanity checks.
 */

/** The superblock's magic. */
export const EXT_MAGIC = 0xef53;
/** Where the superblock starts in the file system, and its size. */
export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 1024;
/** The root directory's inode. */
export const ROOT_INO = 2;
/** The extent tree node magic. */
export const EXTENT_MAGIC = 0xf30a;

export const COMPAT_HAS_JOURNAL = 0x4;
export const COMPAT_SPARSE_SUPER2 = 0x200;
export const INCOMPAT_COMPRESSION = 0x1;
export const INCOMPAT_FILETYPE = 0x2;
export const INCOMPAT_RECOVER = 0x4;
export const INCOMPAT_JOURNAL_DEV = 0x8;
export const INCOMPAT_META_BG = 0x10;
export const INCOMPAT_EXTENTS = 0x40;
export const INCOMPAT_64BIT = 0x80;
export const INCOMPAT_LARGEDIR = 0x4000;
export const INCOMPAT_INLINE_DATA = 0x8000;
export const INCOMPAT_ENCRYPT = 0x10000;
export const RO_COMPAT_SPARSE_SUPER = 0x1;
export const RO_COMPAT_HUGE_FILE = 0x8;
export const RO_COMPAT_BIGALLOC = 0x200;

export const INODE_FLAG_INDEX = 0x1000;
export const INODE_FLAG_HUGE_FILE = 0x40000;
export const INODE_FLAG_EXTENTS = 0x80000;
export const INODE_FLAG_EA_INODE = 0x200000;
export const INODE_FLAG_INLINE_DATA = 0x10000000;

export const BG_INODE_UNINIT = 0x1;
export const BG_BLOCK_UNINIT = 0x2;

/** File types in the top four bits of i_mode. */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/** What a path is, as the diff and the file browser say it. */
export type FileKind = "file" | "dir" | "symlink" | "other";

export function kindOfMode(mode: number): FileKind {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "symlink";
    default:
      return "other";
  }
}

/** The directory entry file_type byte as a mode type (0 when unknown). */
export const DIRENT_TYPE_MODE = [0, S_IFREG, S_IFDIR, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFLNK] as const;

/**
 * The one error for a disk whose files cannot be read (not ext4, damaged, or using a feature this
 * reader refuses): the UI shows its message and nothing else is affected.
 */
export class UnreadableDiskError extends Error {
  constructor(reason: string) {
    super(`can't read files on this disk: ${reason}`);
    this.name = "UnreadableDiskError";
  }
}

/** Throws UnreadableDiskError unless `ok`. */
export function check(ok: boolean, reason: string): asserts ok {
  if (!ok) throw new UnreadableDiskError(reason);
}

export interface Superblock {
  inodesCount: number;
  blocksCount: number;
  firstDataBlock: number;
  blockSize: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  revLevel: number;
  firstIno: number;
  inodeSize: number;
  compat: number;
  incompat: number;
  roCompat: number;
  uuid: Uint8Array;
  volumeName: string;
  journalInum: number;
  journalDev: number;
  descSize: number;
  /** Blocks kept after the descriptor table for it to grow (resize_inode). */
  reservedGdtBlocks: number;
  firstMetaBg: number;
  backupBgs: [number, number];
  groupCount: number;
}

const le = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Parses and sanity-checks a superblock (the 1024 bytes at SUPERBLOCK_OFFSET). */
export function parseSuperblock(bytes: Uint8Array, deviceSize: number): Superblock {
  check(bytes.byteLength >= SUPERBLOCK_SIZE, "the disk is too small to hold a file system");
  const v = le(bytes);
  check(v.getUint16(0x38, true) === EXT_MAGIC, "no ext2/ext3/ext4 file system was found (the superblock's magic is missing)");
  const logBlock = v.getUint32(0x18, true);
  check(logBlock <= 6, `its block size (1024 << ${logBlock}) is not one ext4 uses`);
  const blockSize = 1024 << logBlock;
  const incompat = v.getUint32(0x60, true);
  const roCompat = v.getUint32(0x64, true);
  const revLevel = v.getUint32(0x4c, true);
  const is64 = (incompat & INCOMPAT_64BIT) !== 0;
  const blocksCount = v.getUint32(0x04, true) + (is64 ? v.getUint32(0x150, true) * 2 ** 32 : 0);
  const blocksPerGroup = v.getUint32(0x20, true);
  const inodesPerGroup = v.getUint32(0x28, true);
  const inodesCount = v.getUint32(0x00, true);
  const inodeSize = revLevel === 0 ? 128 : v.getUint16(0x58, true);
  const firstDataBlock = v.getUint32(0x14, true);
  const descSize = is64 ? Math.max(32, v.getUint16(0xfe, true)) : 32;
  check(blocksPerGroup > 0 && blocksPerGroup <= 8 * blockSize, "its blocks per group is damaged");
  check(inodesPerGroup > 0 && inodesPerGroup <= 8 * blockSize, "its inodes per group is damaged");
  check(inodeSize >= 128 && inodeSize <= blockSize && (inodeSize & (inodeSize - 1)) === 0, `its inode size ${inodeSize} is damaged`);
  check(blocksCount > firstDataBlock, "its block count is damaged");
  check(descSize <= 1024 && (descSize & (descSize - 1)) === 0, "its group descriptor size is damaged");
  // The device may be cut short (a partition smaller than its file system): reads past its end
  // are refused when they happen; a wildly wrong count is refused now.
  check(blocksCount * blockSize <= deviceSize * 2 + 2 ** 40, "its block count is far larger than the disk");
  const groupCount = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  check(inodesCount <= groupCount * inodesPerGroup, "its inode count is damaged");
  check((incompat & INCOMPAT_COMPRESSION) === 0, "it uses ext2 compression, which is not supported");
  check((incompat & INCOMPAT_JOURNAL_DEV) === 0, "it is an external journal, not a file system");
  check((incompat & INCOMPAT_ENCRYPT) === 0, "it is encrypted");
  check((roCompat & RO_COMPAT_BIGALLOC) === 0, "it uses bigalloc clusters, which are not supported");
  const name = bytes.subarray(0x78, 0x88);
  const nul = name.indexOf(0);
  return {
    inodesCount,
    blocksCount,
    firstDataBlock,
    blockSize,
    blocksPerGroup,
    inodesPerGroup,
    revLevel,
    firstIno: revLevel === 0 ? 11 : v.getUint32(0x54, true),
    inodeSize,
    compat: v.getUint32(0x5c, true),
    incompat,
    roCompat,
    uuid: bytes.slice(0x68, 0x78),
    volumeName: new TextDecoder().decode(nul >= 0 ? name.subarray(0, nul) : name),
    journalInum: v.getUint32(0xe0, true),
    journalDev: v.getUint32(0xe4, true),
    descSize,
    reservedGdtBlocks: v.getUint16(0xce, true),
    firstMetaBg: v.getUint32(0x104, true),
    backupBgs: [v.getUint32(0x24c, true), v.getUint32(0x250, true)],
    groupCount,
  };
}

export interface GroupDesc {
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: number;
  flags: number;
  /** Inodes at the end of the group's table never used (0 when the fs does not track it). */
  itableUnused: number;
}

export function parseGroupDesc(bytes: Uint8Array, size: number): GroupDesc {
  const v = le(bytes);
  const wide = size >= 64;
  const hi = (at: number) => (wide ? v.getUint32(at, true) * 2 ** 32 : 0);
  return {
    blockBitmap: v.getUint32(0x00, true) + hi(0x20),
    inodeBitmap: v.getUint32(0x04, true) + hi(0x24),
    inodeTable: v.getUint32(0x08, true) + hi(0x28),
    flags: v.getUint16(0x12, true),
    itableUnused: v.getUint16(0x1c, true) + (wide ? v.getUint16(0x32, true) * 65536 : 0),
  };
}

/** Whether a group holds a superblock backup (and so, without META_BG, a descriptor table copy). */
export function groupHasSuper(sb: Superblock, group: number): boolean {
  if (group === 0) return true;
  if (sb.compat & COMPAT_SPARSE_SUPER2) return group === sb.backupBgs[0] || group === sb.backupBgs[1];
  if (group <= 1 || !(sb.roCompat & RO_COMPAT_SPARSE_SUPER)) return true;
  if (group % 2 === 0) return false;
  for (const base of [3, 5, 7]) {
    let n = base;
    while (n < group) n *= base;
    if (n === group) return true;
  }
  return false;
}

/** Where each group's descriptor is: [block, byte offset in it]. */
export function descriptorLocation(sb: Superblock, group: number): [number, number] {
  const perBlock = sb.blockSize / sb.descSize;
  const metaGroup = Math.floor(group / perBlock);
  const index = group % perBlock;
  if (!(sb.incompat & INCOMPAT_META_BG) || metaGroup < sb.firstMetaBg) {
    return [sb.firstDataBlock + 1 + metaGroup, index * sb.descSize];
  }
  const first = metaGroup * perBlock;
  const start = sb.firstDataBlock + first * sb.blocksPerGroup;
  return [start + (groupHasSuper(sb, first) ? 1 : 0), index * sb.descSize];
}

/** The fields of an inode the reader uses. */
export interface Inode {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  linksCount: number;
  /** 512-byte sectors (or blocks with HUGE_FILE) the inode holds, for fast symlinks. */
  blocks: number;
  flags: number;
  mtime: number;
  dtime: number;
  generation: number;
  fileAcl: number;
  /** The 60 bytes of i_block. */
  iBlock: Uint8Array;
  /** The raw record (s_inode_size bytes), for comparisons and in-inode attributes. */
  raw: Uint8Array;
}

export function parseInode(ino: number, raw: Uint8Array, sb: Superblock): Inode {
  const v = le(raw);
  const flags = v.getUint32(0x20, true);
  let blocks = v.getUint32(0x1c, true) + v.getUint16(0x74, true) * 2 ** 32;
  if (sb.roCompat & RO_COMPAT_HUGE_FILE && flags & INODE_FLAG_HUGE_FILE) blocks *= sb.blockSize / 512;
  const mode = v.getUint16(0x00, true);
  const wideSize = (mode & S_IFMT) === S_IFREG || ((mode & S_IFMT) === S_IFDIR && (sb.incompat & INCOMPAT_LARGEDIR) !== 0);
  return {
    ino,
    mode,
    uid: v.getUint16(0x02, true) + v.getUint16(0x78, true) * 65536,
    gid: v.getUint16(0x18, true) + v.getUint16(0x7a, true) * 65536,
    // i_size_high is a regular file's (and, with LARGEDIR, a directory's); older ext2 used it for ACLs.
    size: v.getUint32(0x04, true) + (wideSize ? v.getUint32(0x6c, true) * 2 ** 32 : 0),
    linksCount: v.getUint16(0x1a, true),
    blocks,
    flags,
    mtime: v.getInt32(0x10, true),
    dtime: v.getUint32(0x14, true),
    generation: v.getUint32(0x64, true),
    fileAcl: v.getUint32(0x68, true) + v.getUint16(0x76, true) * 2 ** 32,
    iBlock: raw.subarray(0x28, 0x28 + 60),
    raw,
  };
}

/** An inode in use: a type, links, and not deleted (free slots are zeros or have dtime set). */
export function inodeInUse(inode: Inode): boolean {
  return (inode.mode & S_IFMT) !== 0 && inode.linksCount > 0 && inode.dtime === 0;
}

/**
 * The in-inode attribute `system.data` (inline data beyond i_block's 60 bytes), or an empty
 * array. Bounded by the record: a damaged list ends the search.
 */
export function inlineDataTail(inode: Inode): Uint8Array {
  const raw = inode.raw;
  if (raw.byteLength <= 128 + 4) return new Uint8Array(0);
  const v = le(raw);
  const start = 128 + v.getUint16(0x80, true);
  if (start + 4 > raw.byteLength || v.getUint32(start, true) !== 0xea020000) return new Uint8Array(0);
  const first = start + 4;
  for (let at = first; at + 16 <= raw.byteLength; ) {
    const nameLen = raw[at]!;
    if (nameLen === 0 && v.getUint32(at, true) === 0) break;
    const nameIndex = raw[at + 1]!;
    const valueOffs = v.getUint16(at + 2, true);
    const valueSize = v.getUint32(at + 8, true);
    const name = new TextDecoder().decode(raw.subarray(at + 16, at + 16 + nameLen));
    if (nameIndex === 7 && name === "data") {
      const from = first + valueOffs;
      if (from + valueSize > raw.byteLength) return new Uint8Array(0);
      return raw.subarray(from, from + valueSize);
    }
    at += 16 + ((nameLen + 3) & ~3);
  }
  return new Uint8Array(0);
}
