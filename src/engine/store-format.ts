/**
 * The local store: Sandglass's IndexedDB layout, in one place.
 *
 * Database `sandglass`, schema version {@link STORE_VERSION}. Everything a machine is lives here;
 * the repository (see repo-format.ts) only holds immutable base images and snapshots.
 *
 * Store          Key                              Value
 * ─────────────  ───────────────────────────────  ─────────────────────────────────────────────────
 * chunks         sha256 hex (string)              Uint8Array: an uncompressed, verified repository
 *                                                 chunk. Shared by every machine and image (copy-on-read
 *                                                 cache); safe to evict, the repository has it, except
 *                                                 the chunks of an image a person brought (below).
 * manifests      manifest URL (string)            {@link ManifestRecord}: last good copy, so a machine
 *                                                 still opens with the network down.
 * machines       machine id (string)              {@link MachineRecord}.
 * branches       [machine, branch]                {@link BranchRecord}: the timeline is a tree.
 * log            [machine, seq]                   {@link LogRecord}: one guest write (metadata only).
 * groups         [machine, group, branch, seq]    Uint32Array(3 × GROUP_BLOCKS): where each block of
 *                                                 disk group `group` (GROUP_BLOCKS consecutive blocks)
 *                                                 stands on `branch` right after write `seq`, one entry
 *                                                 of three numbers per block: [dataSeq, part, index] =
 *                                                 block `index` of data record [machine, dataSeq, part];
 *                                                 part ZERO_PART means "all zeros" (nothing stored);
 *                                                 dataSeq 0 means "not written on this branch: ask its
 *                                                 parent". Written for every group a write touches, as a
 *                                                 whole copy of the group's entries (copy on write), so
 *                                                 the version of a block visible at a point is one
 *                                                 reverse cursor step per ancestor branch, whatever the
 *                                                 length of history. This is the timeline index.
 * data           [machine, seq, part]             Uint8Array: the non-zero blocks of one or more
 *                                                 consecutive writes, BLOCK_SIZE each, at most
 *                                                 DATA_RECORD_BLOCKS per record; `seq` is the write that
 *                                                 opened the record. The write log's data, stored once.
 *                                                 Packed because Chromium stores values above 64 KiB as
 *                                                 files beside its database: 64 MiB as 4 KiB records
 *                                                 took ~10 s of its time, as 1 MiB records ~0.4 s.
 * markers        [machine, seq, id]               {@link MarkerRecord}: end markers (consistent points).
 * checkpoints    [machine, id]                    {@link CheckpointRecord}: a whole-machine state at a
 *                                                 point; its bytes are pieces in `statePacks`, cut as
 *                                                 checkpoint-format.ts says.
 * statePacks     [machine, pack]                  {@link StatePack}: pieces of one or more of the
 *                                                 machine's checkpoints, ~256 KiB per pack. The
 *                                                 checkpoint that first had a piece stores it; later
 *                                                 ones name it (if the worker still holds it in memory,
 *                                                 else they store it again). Deleted with the machine.
 * remotePins     [manifest URL, chunk index]      string: the SHA-256 hex of a chunk of an image read
 *                                                 from a URL, as it was first fetched ("" for an
 *                                                 all-zero chunk); its content is in `chunks` (written
 *                                                 in the same transaction). See below.
 * chunkMeta      sha256 hex (string)              {@link ChunkMeta}: the size of a `chunks` record and
 *                                                 when it was last read, written with the chunk (LRU
 *                                                 eviction of the image cache, storage panel).
 * dataInfo       [machine, seq, part]             number: byte length of that `data` record, written
 *                                                 with it (sizes without reading megabytes).
 * packInfo       [machine, pack]                  {@link PackInfo}: pieces and stored bytes of that
 *                                                 `statePacks` record, written with it.
 * settings       name (string)                    Sandglass-wide settings ({@link SETTINGS}).
 *
 * Images a person brought (a file imported in the page; added 2026-12-02, nothing to migrate) live
 * in a repository of their own that exists only in this browser, {@link LOCAL_REPO}: the image's
 * manifest (repo-format.ts, kind "image") is in `manifests` under its manifest URL there, and its
 * chunks are in `chunks` like any other (stored uncompressed, refs without ".gz"). Nothing can
 * fetch them again, so nothing may evict them while a machine uses the image.
 *
 * An image opened from a URL (added 2026-12-02, store version 5) is such an image too, whose
 * ManifestRecord has `remote`: the file's pinned identity (remote-image.ts). Its manifest lists
 * every chunk as null (not known yet); a chunk is known once it has a `remotePins` record, and
 * chunks without one are read from the URL with a Range request, hashed and pinned. A chunk once
 * pinned is never taken from the URL again unless it is missing here, and then only if it hashes
 * the same: two versions of the file never mix in one disk.
 *
 * Thinning (retention.ts, history-sweep.ts; added in version 6) deletes checkpoints and quiet
 * points a retention rule no longer keeps, then what nothing kept refers to: `groups` versions no
 * kept point reads (for each group and branch, the newest version at or before each kept seq of
 * the branch stays), `log` records of writes with no version left, `data` records no remaining
 * entry names, `statePacks` no remaining checkpoint names. A pack or data record that is mostly
 * dead is compacted: its live pieces or blocks move to a new record (a pack gets the next pack
 * number, a data record a fresh seq that is no write: `lastSeq` is bumped for it) and every
 * remaining reference is rewritten, in the same transaction that deletes the old one. A point
 * that was thinned is no longer a place the disk may be moved to (DiskService checks it).
 * The image cache (`chunks` of repository images) is evictable, least recently used first: a
 * chunk is evictable when a manifest fetched from a repository (ManifestRecord.origin "network")
 * names it, so it can be fetched again; chunks only an imported image, a URL image or a snapshot
 * from a `.sandglass` file names are never evicted, and neither is any machine's own data.
 *
 * Sequence numbers are per machine, start at 1 and never repeat, across branches. A point in a
 * machine's history is (branch, seq): the disk at that point is the base image plus, for each branch
 * on the path to the root, that branch's writes up to the point where its child forked off.
 *
 * Durability: writes are visible to the guest at once and reach IndexedDB in one transaction per
 * batch, at most {@link FLUSH_DELAY_MS} after the write (or sooner when {@link FLUSH_BYTES} are
 * pending). A crash or closed tab can lose at most that window of writes; what was committed is
 * always a prefix of the log, so the disk is at some earlier write point, never torn.
 *
 * Versions: 1 first layout; 2 zero blocks stored empty; 3 `blocks` (one record per block version,
 * [machine, block, branch, seq] → its 4 KiB, or empty for zeros) replaced by `groups` and `data`,
 * and `statePieces` (sha256 hex → one piece, shared by every machine; CheckpointRecord.pieces
 * listed the hashes) by per-machine `statePacks` and CheckpointRecord.refs; 4 `statePacks` may be
 * deflated (StatePack.deflated: an idle checkpoint's pages shrink ~6×), nothing to rewrite, but a
 * version 3 reader would take the deflated bytes for pieces; 5 adds `remotePins` and
 * ManifestRecord.remote (an older reader would take a URL image's unknown chunks for zeros), and
 * MachineRecord.hardware/input and CheckpointRecord.hardware (machine settings changed later); 6
 * adds `chunkMeta`, `dataInfo`, `packInfo` and `settings` (the upgrade fills the first three from
 * what is stored, one cursor pass), ManifestRecord.origin and CheckpointRecord.published (a
 * version 5 reader ignores them). local-store.ts migrates older stores on open.
 *
 * Changing any of this means bumping STORE_VERSION and migrating in `upgrade` (local-store.ts).
 */
import type { DBSchema } from "idb";
import type { DiskManifest, Hardware } from "./repo-format.ts";
import type { RemoteIdentity } from "./remote-image.ts";
import type { RetentionRule } from "./retention.ts";

/** Bump on any change to the stores below; local-store.ts migrates from every older version. */
export const STORE_VERSION = 6;
export const DB_NAME = "sandglass";

/** Granularity of write versions: ext4's block size, so most guest writes cover whole blocks. */
export const BLOCK_SIZE = 4096;
/** Blocks per `groups` record: 256 KiB of disk, 768-byte records. */
export const GROUP_BLOCKS = 64;
/** Blocks per `data` record at most (1 MiB). */
export const DATA_RECORD_BLOCKS = 256;
/** `part` of a `groups` entry whose block is all zeros. */
export const ZERO_PART = 0xffffffff;
/** The `groups` record a block's entry is in. */
export const groupOf = (block: number) => Math.floor(block / GROUP_BLOCKS);
/** Where a block's entry (three numbers) starts in its group's entries. */
export const entryOf = (block: number) => 3 * (block % GROUP_BLOCKS);

/** Longest time a guest write waits in memory before its IndexedDB transaction starts. */
export const FLUSH_DELAY_MS = 250;
/** Pending bytes that trigger a flush before the delay runs out (bounds memory under `dd`). */
export const FLUSH_BYTES = 8 * 1024 * 1024;

/** The repository of images imported in this browser (see the notes above): never fetched. */
export const LOCAL_REPO = "sandglass-local:/";

/** Where a machine's base disk comes from. */
export interface MachineSource {
  /** Base URL of the image repository, ending in `/`. */
  repo: string;
  kind: "image" | "snapshot";
  /** Image name or snapshot id inside that repository. */
  name: string;
}

/** A point in a machine's history. */
export interface Point {
  branch: number;
  seq: number;
}

export interface MachineRecord {
  id: string;
  name: string;
  source: MachineSource;
  created: number;
  /** Last time a page opened it: the default machine for a source is the one opened last. */
  opened: number;
  /** Highest sequence number ever issued (any branch). */
  lastSeq: number;
  /** Highest branch id ever issued. */
  lastBranch: number;
  /** Where the machine is now: the disk the guest sees is the disk at this point. */
  now: Point;
  /**
   * Its machine shape, once changed by the person (added 2026-12-02; absent: its image's). A
   * change takes effect at a cold boot on a new branch; checkpoints keep the shape they were taken in.
   */
  hardware?: Hardware;
  /** The page's keyboard and mouse for the screen (added 2026-12-02; absent: both on). */
  input?: InputSettings;
  /** Turned off to change its settings (added 2026-12-02): the next open cold-boots at `now`. */
  off?: boolean;
}

/** Whether keys and the mouse on the screen reach the guest (not part of any machine state). */
export interface InputSettings {
  keyboard: boolean;
  mouse: boolean;
}

export interface BranchRecord {
  machine: string;
  id: number;
  /** Branch this one forked from; null for the root branch. */
  parent: number | null;
  /** Last write of the parent visible on this branch. */
  forkSeq: number;
  /** Newest write on this branch (forkSeq while it has none). */
  head: number;
  created: number;
  name?: string;
}

export interface LogRecord {
  machine: string;
  seq: number;
  branch: number;
  /** Wall time of the write, ms since the epoch. */
  time: number;
  /** The guest's write, in bytes (sector aligned). */
  offset: number;
  length: number;
  /** First block and block count whose versions this write stored. */
  firstBlock: number;
  blockCount: number;
}

export type MarkerKind = "checkpoint" | "bookmark" | "quiet";

export interface MarkerRecord {
  machine: string;
  /** The marker holds after this write (and before the next). */
  seq: number;
  branch: number;
  id: string;
  kind: MarkerKind;
  time: number;
  name?: string;
}

export interface CheckpointRecord {
  machine: string;
  id: string;
  /** The disk point the machine state belongs with (a marker of kind "checkpoint" sits there too). */
  branch: number;
  seq: number;
  time: number;
  /** CHECKPOINT_FORMAT of the cutting rule used. */
  format: number;
  /** How many pieces the state was cut into. */
  pieceCount: number;
  /**
   * Where each piece is, in order ([pack, index] pairs in `statePacks`; encodeRefs() in
   * checkpoint-format.ts): their concatenation is the v86 state.
   */
  refs: Uint8Array;
  /**
   * Size of the whole state, and bytes this checkpoint added to the store: its new pieces (after
   * sharing), its piece list and its thumbnail.
   */
  stateBytes: number;
  storedBytes: number;
  /** Small JPEG of the screen as a data URL, for the timeline. */
  thumbnail?: string;
  /** Taken by the timer rather than by the person. */
  auto: boolean;
  /**
   * The machine shape the state was taken in, restored with it (added 2026-12-02; absent: the
   * machine's image's, as for every checkpoint before settings could change).
   */
  hardware?: Hardware;
  name?: string;
  /** Snapshot ids this checkpoint was published as (added in version 6): never thinned. */
  published?: string[];
}

/**
 * Pieces stored together: piece i is bytes[ends[i-1] (or 0), ends[i]) of the pack's bytes, which
 * are stored raw DEFLATE when `deflated` (from version 4 on; checkpoint-format.ts says when).
 */
export interface StatePack {
  bytes: Uint8Array;
  ends: Uint32Array;
  deflated?: boolean;
}

export interface ManifestRecord {
  url: string;
  manifest: DiskManifest;
  fetched: number;
  /** An image read from a URL (see the notes above): the file's identity as pinned. */
  remote?: RemoteIdentity;
  /**
   * Where it came from (added in version 6): "network" (fetched from its repository, which can
   * serve its chunks again), "bundle" (a `.sandglass` file), "import" (a file or URL a person
   * brought). Absent (older stores): "network" for images of a repository, else unknown, which
   * keeps its chunks from eviction.
   */
  origin?: "network" | "bundle" | "import";
}

/** A `chunkMeta` record (see the notes above). */
export interface ChunkMeta {
  bytes: number;
  /** Last read or written, ms since the epoch (refreshed at most every few minutes). */
  used: number;
}

/** A `packInfo` record (see the notes above). */
export interface PackInfo {
  pieces: number;
  bytes: number;
}

/** Names of the `settings` records. */
export const SETTINGS = {
  /** retention.ts RetentionRule, and whether thinning runs on its own ({@link RetentionSetting}). */
  retention: "retention",
  /** Most bytes of repository images kept, or 0 for "as much as the browser allows" (number). */
  imageCacheBytes: "imageCacheBytes",
} as const;

export interface RetentionSetting {
  rule: RetentionRule;
  /** Thin automatically as checkpoints accumulate (else only when asked). */
  auto: boolean;
}

export interface SandglassDB extends DBSchema {
  chunks: { key: string; value: Uint8Array };
  manifests: { key: string; value: ManifestRecord };
  machines: { key: string; value: MachineRecord };
  branches: { key: [string, number]; value: BranchRecord };
  log: { key: [string, number]; value: LogRecord };
  groups: { key: [string, number, number, number]; value: Uint32Array };
  data: { key: [string, number, number]; value: Uint8Array };
  markers: { key: [string, number, string]; value: MarkerRecord };
  checkpoints: { key: [string, string]; value: CheckpointRecord };
  statePacks: { key: [string, number]; value: StatePack };
  remotePins: { key: [string, number]; value: string };
  chunkMeta: { key: string; value: ChunkMeta };
  dataInfo: { key: [string, number, number]; value: number };
  packInfo: { key: [string, number]; value: PackInfo };
  settings: { key: string; value: unknown };
}
