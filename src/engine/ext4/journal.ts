/**
 * jbd2 journal replay, in memory and read-only: the blocks the journal's committed transactions
 * would write, as an overlay over the file system's own blocks. The disk is never written.
 *
 * Why: a point on the timeline is taken while the guest has its ext4 mounted. Metadata committed
 * to the journal reaches its final place only at the next checkpoint of the journal (seconds to
 * minutes later), so without replay a point taken just after `echo x > f; sync` can show stale
 * directories and inodes. Replay happens when the superblock says the file system needs recovery
 * (INCOMPAT_RECOVER) and the journal's log is not empty (s_start ≠ 0), as the kernel and e2fsck do.
 *
 * On disk (all big-endian). Every journal block that is not data starts with a 12-byte header:
 * h_magic 0xC03B3998, h_blocktype (1 descriptor, 2 commit, 3/4 superblock v1/v2, 5 revoke),
 * h_sequence (the transaction). The journal superblock (journal block 0): 0x0C s_blocksize,
 * 0x10 s_maxlen (journal blocks), 0x14 s_first (first log block), 0x18 s_sequence (first
 * transaction in the log), 0x1C s_start (log start; 0: empty), 0x24/0x28/0x2C feature
 * compat/incompat/ro (incompat: 0x1 REVOKE, 0x2 64BIT, 0x4 ASYNC_COMMIT, 0x8 CSUM_V2, 0x10 CSUM_V3,
 * 0x20 FAST_COMMIT), 0x54 s_num_fc_blks (fast-commit blocks at the journal's end, default 256).
 * A transaction is descriptor blocks (each a list of tags, each followed in the log by the data
 * block it names), revoke blocks, and one commit block. Tag: t_blocknr (u32); with CSUM_V3
 * t_flags (u32), t_blocknr_high (u32, 64BIT only), t_checksum (u32): 16 bytes, 12 without 64BIT;
 * otherwise t_checksum (u16), t_flags (u16), t_blocknr_high (u32, 64BIT only): 12 bytes (8
 * without 64BIT), plus 2 with CSUM_V2. Flags: 1 ESCAPE (the data block began with the magic,
 * which was zeroed: put it back), 2 SAME_UUID (else 16 UUID bytes follow the tag), 8 LAST_TAG.
 * With CSUM_V2/V3 a descriptor's last 4 bytes are a checksum, not tags. Revoke block: 0x0C r_count
 * (bytes used, header included), then block numbers (u64 with 64BIT, else u32) from byte 16:
 * those blocks are not replayed from this or earlier transactions.
 *
 * Replay follows jbd2's recovery: scan from s_start while each block has the magic and the
 * expected sequence; a commit block closes a transaction and the sequence moves on; the first
 * block that does not fit ends the log, and a transaction without its commit is dropped (the
 * "uncommitted" flag: the point was taken mid-transaction). Then revokes are gathered from the
 * committed transactions, and each tagged block is replayed unless revoked by its own or a later
 * transaction; later transactions win. The log wraps from the end of the log area to s_first.
 * Checksums are not verified. Fast commits are not replayed (see ext4-format.ts).
 */
import { check } from "./ext4-format.ts";

const JBD2_MAGIC = 0xc03b3998;
const DESCRIPTOR = 1;
const COMMIT = 2;
const SUPERBLOCK_V1 = 3;
const SUPERBLOCK_V2 = 4;
const REVOKE = 5;
const INCOMPAT_64BIT = 0x2;
const INCOMPAT_CSUM_V2 = 0x8;
const INCOMPAT_CSUM_V3 = 0x10;
const INCOMPAT_FAST_COMMIT = 0x20;
const FLAG_ESCAPE = 1;
const FLAG_SAME_UUID = 2;
const FLAG_LAST_TAG = 8;
/** Log blocks read per batch while scanning (descriptors and commits are usually close together). */
const SCAN_BATCH = 64;

/** What replay found, for the UI's "may be inconsistent" flag and the diff's notes. */
export interface JournalState {
  /** The file system has a journal inside it (not external). */
  present: boolean;
  /** The superblock asked for recovery and the log was not empty: replayed (in memory). */
  replayed: boolean;
  /** Committed transactions applied, and the blocks they replaced. */
  transactions: number;
  blocks: number;
  /** The log ends in a transaction without its commit block (dropped, as recovery would). */
  uncommitted: boolean;
}

export interface JournalSource {
  blockSize: number;
  /** Journal blocks the journal inode maps (its size in blocks). */
  length: number;
  /** The file system block holding journal block `i` (null for a hole: a damaged journal). */
  map(i: number): number | null;
  /** Raw reads of file system blocks (no overlay). */
  read(blocks: number[]): Promise<Uint8Array[]>;
}

const be = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

interface Tag {
  target: number;
  /** Journal block index of the data. */
  at: number;
  escape: boolean;
}

/**
 * Replays the committed, un-checkpointed transactions of the journal; returns the overlay
 * (file system block → its content after recovery) and what happened.
 */
export async function replayJournal(source: JournalSource, needsRecovery: boolean): Promise<{ overlay: Map<number, Uint8Array>; state: JournalState }> {
  const state: JournalState = { present: true, replayed: false, transactions: 0, blocks: 0, uncommitted: false };
  const overlay = new Map<number, Uint8Array>();
  const { blockSize } = source;
  const readLog = async (indexes: number[]) => {
    const physical = indexes.map((i) => {
      const p = source.map(i);
      check(p !== null, `the journal has a hole at block ${i}`);
      return p;
    });
    return source.read(physical);
  };
  const [jsb] = await readLog([0]);
  const v = be(jsb!);
  check(v.getUint32(0) === JBD2_MAGIC, "the journal's superblock is damaged");
  const type = v.getUint32(4);
  check(type === SUPERBLOCK_V1 || type === SUPERBLOCK_V2, "the journal's superblock is damaged");
  check(v.getUint32(0x0c) === blockSize, "the journal's block size differs from the file system's");
  const maxLen = v.getUint32(0x10);
  const first = v.getUint32(0x14);
  const incompat = type === SUPERBLOCK_V2 ? v.getUint32(0x28) : 0;
  check(maxLen <= source.length && first >= 1 && first < maxLen, "the journal's geometry is damaged");
  let last = maxLen;
  if (incompat & INCOMPAT_FAST_COMMIT) last = maxLen - (v.getUint32(0x54) || 256);
  check(last > first, "the journal's geometry is damaged");
  const start = v.getUint32(0x1c);
  if (!needsRecovery || start === 0) return { overlay, state };
  check(start >= first && start < last, "the journal's log start is damaged");
  const is64 = (incompat & INCOMPAT_64BIT) !== 0;
  const csum3 = (incompat & INCOMPAT_CSUM_V3) !== 0;
  const csum2 = (incompat & INCOMPAT_CSUM_V2) !== 0;
  const tagBytes = csum3 ? (is64 ? 16 : 12) : (is64 ? 12 : 8) + (csum2 ? 2 : 0);
  const tagLimit = blockSize - (csum2 || csum3 ? 4 : 0);
  const next = (i: number) => (i + 1 >= last ? first : i + 1);

  // Scan: committed transactions, in order.
  const committed: { tags: Tag[]; revoked: number[] }[] = [];
  let sequence = v.getUint32(0x18);
  let at = start;
  let current: { tags: Tag[]; revoked: number[] } | null = null;
  const window = new Map<number, Uint8Array>();
  const logBlock = async (i: number) => {
    let b = window.get(i);
    if (!b) {
      window.clear();
      const indexes: number[] = [];
      for (let k = 0, j = i; k < SCAN_BATCH; k++, j = next(j)) {
        indexes.push(j);
        if (next(j) === start) break;
      }
      const blocks = await readLog(indexes);
      indexes.forEach((j, k) => window.set(j, blocks[k]!));
      b = window.get(i)!;
    }
    return b;
  };
  // Every log block is visited at most once: the log cannot be longer than the journal.
  for (let visited = 0; visited < last - first; ) {
    const block = await logBlock(at);
    const h = be(block);
    if (h.getUint32(0) !== JBD2_MAGIC || h.getUint32(8) !== sequence) break;
    const blockType = h.getUint32(4);
    if (blockType === DESCRIPTOR) {
      current ??= { tags: [], revoked: [] };
      let offset = 12;
      let dataAt = next(at);
      visited++;
      while (offset + tagBytes <= tagLimit) {
        const target = h.getUint32(offset) + (is64 ? h.getUint32(offset + 8) * 2 ** 32 : 0);
        const flags = csum3 ? h.getUint32(offset + 4) : h.getUint16(offset + 6);
        current.tags.push({ target, at: dataAt, escape: (flags & FLAG_ESCAPE) !== 0 });
        dataAt = next(dataAt);
        visited++;
        offset += tagBytes + (flags & FLAG_SAME_UUID ? 0 : 16);
        if (flags & FLAG_LAST_TAG) break;
      }
      at = dataAt;
    } else if (blockType === REVOKE) {
      current ??= { tags: [], revoked: [] };
      const used = Math.min(h.getUint32(12), blockSize);
      const size = is64 ? 8 : 4;
      for (let offset = 16; offset + size <= used; offset += size) {
        current.revoked.push(is64 ? h.getUint32(offset) * 2 ** 32 + h.getUint32(offset + 4) : h.getUint32(offset));
      }
      at = next(at);
      visited++;
    } else if (blockType === COMMIT) {
      committed.push(current ?? { tags: [], revoked: [] });
      current = null;
      sequence = (sequence + 1) >>> 0;
      at = next(at);
      visited++;
    } else {
      break;
    }
  }
  state.uncommitted = current !== null;

  // Revokes: the last committed transaction that revoked each block.
  const revokedIn = new Map<number, number>();
  committed.forEach((t, index) => t.revoked.forEach((b) => revokedIn.set(b, index)));
  // Replay: later transactions win; a block revoked by its own or a later transaction is skipped.
  const replay = new Map<number, Tag>();
  committed.forEach((t, index) => {
    for (const tag of t.tags) {
      const revoked = revokedIn.get(tag.target);
      if (revoked !== undefined && index <= revoked) continue;
      replay.set(tag.target, tag);
    }
  });
  const tags = [...replay.values()];
  const data = await readLog(tags.map((t) => t.at));
  tags.forEach((tag, i) => {
    let block = data[i]!;
    if (tag.escape) {
      block = block.slice();
      be(block).setUint32(0, JBD2_MAGIC);
    }
    overlay.set(tag.target, block);
  });
  state.replayed = true;
  state.transactions = committed.length;
  state.blocks = overlay.size;
  return { overlay, state };
}
