/**
 * How a machine checkpoint (v86 `save_state()` output) is cut into pieces for deduplication.
 *
 * v86 state layout (v86 src/state.js, state version 6):
 *   int32 magic 0x86768676 | int32 version | int32 total length | int32 info length
 *   info block: JSON { buffer_infos: [{offset, length}], state } (registers, device state)
 *   padding to 4 bytes, then the buffer block: every typed array of the state, each at
 *   buffer_infos[i].offset (4-byte aligned). The largest are guest RAM, packed as its
 *   non-zero pages one after another (4096 bytes each, a bitmap says which), and VGA memory.
 *
 * Cutting rule (checkpoint format version {@link CHECKPOINT_FORMAT}): one piece for the header and
 * info block; each buffer is cut into 4096-byte pieces from its own start (so a packed RAM page is
 * exactly one piece, whatever its position), the last piece of a buffer taking the remainder and
 * the padding before the next buffer. Concatenating the pieces in order gives back the state byte
 * for byte. A piece already stored for the machine is not stored again, so a checkpoint costs only
 * the pages that changed since earlier checkpoints. An unknown layout falls back to fixed 64 KiB
 * pieces: still exact, just less sharing.
 *
 * Storage (store-format.ts, `statePacks` and `checkpoints`): a checkpoint's new pieces are packed
 * into numbered packs of about {@link PACK_BYTES}; the checkpoint names each of its pieces as
 * (pack, index in pack), a list kept small by {@link encodeRefs}. A pack is stored deflated
 * ({@link deflatePack}) unless that saves less than an eighth: the pages an idle guest changes are
 * mostly unchanged bytes of kernel structures and shrink ~6× (172 KiB → 29 KiB measured), while
 * pages of random data would only cost time to inflate on every rewind.
 */
import { deflateSync, inflateSync } from "fflate";
import type { StatePack } from "./store-format.ts";
import { concatBytes } from "./util.ts";

/** Bump when the cutting rule changes (stored with each checkpoint). */
export const CHECKPOINT_FORMAT = 1;

/**
 * New pieces per pack, at most (one piece may exceed it). Chromium stores IndexedDB values above
 * 64 KiB as files beside its database: 28 MiB of 4 KiB records took it seconds, in packs it is
 * a fraction of that; and a restore reading a few pieces reads at most this much per pack.
 */
export const PACK_BYTES = 256 * 1024;

const STATE_MAGIC = 0x86768676 | 0;
const PAGE = 4096;
const FALLBACK_PIECE = 64 * 1024;

interface BufferInfo {
  offset: number;
  length: number;
}

function readLayout(state: Uint8Array): { bufferStart: number; buffers: BufferInfo[] } | undefined {
  if (state.byteLength < 16) return undefined;
  const header = new DataView(state.buffer, state.byteOffset, 16);
  if (header.getInt32(0, true) !== STATE_MAGIC) return undefined;
  const total = header.getInt32(8, true);
  const infoLength = header.getInt32(12, true);
  if (total !== state.byteLength || 16 + infoLength > total) return undefined;
  try {
    const info = JSON.parse(new TextDecoder().decode(state.subarray(16, 16 + infoLength))) as { buffer_infos?: BufferInfo[] };
    if (!Array.isArray(info.buffer_infos)) return undefined;
    return { bufferStart: (16 + infoLength + 3) & ~3, buffers: info.buffer_infos };
  } catch {
    return undefined;
  }
}

/** Byte offsets where the state is cut; the pieces are [cuts[i], cuts[i+1]). */
export function cutPoints(state: Uint8Array): number[] {
  const layout = readLayout(state);
  const cuts = [0];
  const push = (at: number) => {
    if (at > cuts[cuts.length - 1]! && at < state.byteLength) cuts.push(at);
  };
  if (!layout) {
    for (let at = FALLBACK_PIECE; at < state.byteLength; at += FALLBACK_PIECE) push(at);
  } else {
    const sorted = [...layout.buffers].sort((a, b) => a.offset - b.offset);
    for (const buffer of sorted) {
      const start = layout.bufferStart + buffer.offset;
      push(start);
      for (let at = start + PAGE; at < start + buffer.length; at += PAGE) push(at);
    }
  }
  cuts.push(state.byteLength);
  return cuts;
}

/** The state cut into pieces (views into `state`, not copies). */
export function splitState(state: Uint8Array): Uint8Array[] {
  const cuts = cutPoints(state);
  const pieces: Uint8Array[] = [];
  for (let i = 0; i + 1 < cuts.length; i++) pieces.push(state.subarray(cuts[i], cuts[i + 1]));
  return pieces;
}

/** Reassembles a state from its pieces. */
export function joinState(pieces: readonly Uint8Array[]): Uint8Array {
  return concatBytes(pieces);
}

/** Pieces as one stored value (see StatePack), not deflated. */
export function packFrom(pieces: readonly Uint8Array[]): StatePack {
  const ends = new Uint32Array(pieces.length);
  let total = 0;
  pieces.forEach((p, i) => (ends[i] = total += p.byteLength));
  return { bytes: concatBytes(pieces), ends };
}

/**
 * The pack deflated if that makes it at least an eighth smaller, else as it is. Native
 * CompressionStream (zlib in the browser): a checkpoint's tens of MiB after a cold boot take a
 * fraction of the CPU of a script deflater, and the worker answers disk reads between its chunks.
 */
export async function deflatePack(pack: StatePack): Promise<StatePack> {
  if (pack.deflated) return pack;
  const stream = new Blob([pack.bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream("deflate-raw"));
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  return bytes.byteLength <= pack.bytes.byteLength - pack.bytes.byteLength / 8 ? { bytes, ends: pack.ends, deflated: true } : pack;
}

/**
 * A stored pack's pieces (copies, not views of one buffer: each is held on its own). Inflated
 * with fflate: for 256 KiB it is quicker than setting up a native stream per pack.
 */
export function unpack({ bytes, ends, deflated }: StatePack): Uint8Array[] {
  const raw = deflated ? inflateSync(bytes) : bytes;
  if (raw.byteLength !== (ends.length ? ends[ends.length - 1]! : 0)) throw new Error("a checkpoint pack is damaged (size mismatch)");
  return Array.from(ends, (end, i) => raw.slice(i ? ends[i - 1]! : 0, end));
}

/** Where a stored piece is: its pack and its index in that pack. */
export type Place = readonly [pack: number, index: number];

/**
 * Places new pieces in packs of about PACK_BYTES, numbered on from `pack`, and hands each pack
 * to `onPack` once it is full or closed (saving a checkpoint, and migrating older stores).
 */
export class PackBuilder {
  private open: Uint8Array[] = [];
  private openBytes = 0;

  constructor(
    private pack: number,
    private readonly onPack: (pack: number, pieces: Uint8Array[]) => void,
  ) {}

  add(piece: Uint8Array): Place {
    if (this.openBytes > 0 && this.openBytes + piece.byteLength > PACK_BYTES) this.close();
    this.open.push(piece);
    this.openBytes += piece.byteLength;
    return [this.pack, this.open.length - 1];
  }

  /** Hands over the open pack, if any; returns the number the next pack gets. */
  close(): number {
    if (this.open.length) {
      this.onPack(this.pack++, this.open);
      this.open = [];
      this.openBytes = 0;
    }
    return this.pack;
  }
}

/**
 * A checkpoint's piece list, [pack, index] per piece as a Uint32Array of pairs, stored compactly:
 * each number as its difference from the same number of the previous pair (consecutive pieces
 * mostly sit side by side in one pack), then deflated. ~5 KiB for a 64 MiB machine's ~9,000 pieces
 * instead of ~70 KiB raw (or ~600 KiB as hash strings, the layout before store version 3).
 */
export function encodeRefs(refs: Uint32Array): Uint8Array {
  const deltas = new Int32Array(refs.length);
  for (let i = 0; i < refs.length; i++) deltas[i] = refs[i]! - (i >= 2 ? refs[i - 2]! : 0);
  return deflateSync(new Uint8Array(deltas.buffer), { level: 6 });
}

export function decodeRefs(encoded: Uint8Array): Uint32Array {
  const raw = inflateSync(encoded);
  const deltas = new Int32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const refs = new Uint32Array(deltas.length);
  for (let i = 0; i < deltas.length; i++) refs[i] = deltas[i]! + (i >= 2 ? refs[i - 2]! : 0);
  return refs;
}
