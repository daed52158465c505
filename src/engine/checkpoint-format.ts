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
 * for byte. Pieces are stored once by SHA-256, so a checkpoint costs only the pages that changed
 * since any earlier checkpoint. An unknown layout falls back to fixed 64 KiB pieces: still exact,
 * just less sharing.
 */

/** Bump when the cutting rule changes (stored with each checkpoint). */
export const CHECKPOINT_FORMAT = 1;

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
  const total = pieces.reduce((n, p) => n + p.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
