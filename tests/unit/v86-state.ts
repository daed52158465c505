/** Machine states shaped like v86's (header, JSON info, 4 KiB-cut buffers) for checkpoint tests. */

export const PAGE = 4096;

/** A state in v86's layout (see checkpoint-format.ts) holding `buffers`. */
export function v86State(buffers: Uint8Array[]): Uint8Array {
  let offset = 0;
  const infos = buffers.map((b) => {
    const info = { offset, length: b.byteLength };
    offset += (b.byteLength + 3) & ~3;
    return info;
  });
  const info = new TextEncoder().encode(JSON.stringify({ buffer_infos: infos, state: {} }));
  const bufferStart = (16 + info.byteLength + 3) & ~3;
  const state = new Uint8Array(bufferStart + offset);
  const header = new DataView(state.buffer);
  header.setInt32(0, 0x86768676 | 0, true);
  header.setInt32(4, 6, true);
  header.setInt32(8, state.byteLength, true);
  header.setInt32(12, info.byteLength, true);
  state.set(info, 16);
  buffers.forEach((b, i) => state.set(b, bufferStart + infos[i]!.offset));
  return state;
}

/** A page of pseudo-random bytes, the same for the same seed. */
export function page(seed: number): Uint8Array {
  const p = new Uint8Array(PAGE);
  let x = seed * 2654435761;
  for (let i = 0; i < PAGE; i++) p[i] = (x = (Math.imul(x, 1103515245) + 12345) | 0) >>> 24;
  return p;
}

/** The pages of the given seeds, one after another. */
export const pages = (seeds: number[]) => {
  const out = new Uint8Array(seeds.length * PAGE);
  seeds.forEach((s, i) => out.set(page(s), i * PAGE));
  return out;
};
