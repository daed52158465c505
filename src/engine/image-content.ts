/**
 * An image file's content, a slice at a time: a raw file as it is, a gzip- or xz-compressed one
 * inflated on the way (fflate's streaming Gunzip; xz-decompress's streaming XZ, WebAssembly), so
 * no image is ever whole in memory. Used by the importer (image-import.ts) in the page's worker
 * and in Node.
 */
import { Gunzip } from "fflate";
import { DETECT_BYTES, NotAnImageError } from "./image-detect.ts";

/** What the importer reads: a File in the browser, a file on disk in Node. */
export interface ImageFile {
  name: string;
  size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
}

export type Compression = "gzip" | "xz";

export interface Content {
  /** Bytes of the image (a compressed file's: from its trailer or index, checked at the end). */
  size: number;
  compression: Compression | null;
  /** The first DETECT_BYTES (or all of a shorter image). */
  head: Uint8Array;
  /** The slices in order (SLICE_BYTES each but the last), with how much of the file was read. */
  slices(): AsyncGenerator<Slice>;
}

interface Slice {
  data: Uint8Array;
  fileBytes: number;
}

/** Bytes read from the file per step (and per IndexedDB transaction of the importer). */
export const SLICE_BYTES = 8 * 1024 * 1024;

export function compressionOf(b: Uint8Array): Compression | null {
  if (b.length >= 18 && b[0] === 0x1f && b[1] === 0x8b) return "gzip";
  if (b.length >= 32 && [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00].every((m, i) => b[i] === m)) return "xz";
  return null;
}

export async function openContent(file: ImageFile): Promise<Content> {
  const start = file.size === 0 ? new Uint8Array(0) : await file.read(0, Math.min(DETECT_BYTES, file.size));
  const compression = compressionOf(start);
  if (!compression) {
    return {
      size: file.size,
      compression,
      head: start,
      async *slices() {
        for (let at = 0; at < file.size; at += SLICE_BYTES) {
          const data = await file.read(at, Math.min(SLICE_BYTES, file.size - at));
          yield { data, fileBytes: at + data.byteLength };
        }
      },
    };
  }
  const damaged = () => new NotAnImageError(file.name, `it is ${compression}-compressed, but the data is damaged or cut short.`);
  const size = compression === "gzip" ? await gzipSize(file) : await xzSize(file, damaged);
  const inflate = compression === "gzip" ? gunzipPieces : unxzPieces;
  const slices = async function* (limit = Infinity): AsyncGenerator<Slice> {
    let total = 0;
    for await (const slice of reslice(inflate(file, damaged), limit)) {
      total += slice.data.byteLength;
      yield slice;
      if (total >= limit) return;
    }
    // gzip's trailer has the size modulo 2^32; xz's index has it whole.
    if (compression === "gzip" ? total % 2 ** 32 !== size : total !== size) throw damaged();
  };
  // The first slice, for detection; the import inflates again.
  let head = new Uint8Array(0);
  for await (const { data } of slices(DETECT_BYTES)) head = data.slice(0, DETECT_BYTES);
  return { size, compression, head, slices: () => slices() };
}

/** Cuts inflated pieces of any size into SLICE_BYTES slices (the last may be shorter). */
async function* reslice(pieces: AsyncIterable<Slice>, limit: number): AsyncGenerator<Slice> {
  const held: Uint8Array[] = [];
  let heldBytes = 0;
  let fileBytes = 0;
  const take = (n: number) => {
    const out = new Uint8Array(n);
    for (let at = 0; at < n; ) {
      const first = held[0]!;
      const used = Math.min(first.byteLength, n - at);
      out.set(first.subarray(0, used), at);
      at += used;
      if (used === first.byteLength) held.shift();
      else held[0] = first.subarray(used);
    }
    heldBytes -= n;
    return out;
  };
  let given = 0;
  for await (const piece of pieces) {
    held.push(piece.data);
    heldBytes += piece.data.byteLength;
    fileBytes = piece.fileBytes;
    while (heldBytes >= SLICE_BYTES) {
      given += SLICE_BYTES;
      yield { data: take(SLICE_BYTES), fileBytes };
      if (given >= limit) return;
    }
  }
  if (heldBytes > 0) yield { data: take(heldBytes), fileBytes };
}

async function gzipSize(file: ImageFile): Promise<number> {
  const trailer = await file.read(file.size - 4, 4);
  return new DataView(trailer.buffer, trailer.byteOffset, 4).getUint32(0, true);
}

async function* gunzipPieces(file: ImageFile, damaged: () => Error): AsyncGenerator<Slice> {
  const out: Uint8Array[] = [];
  let ended = false;
  const inflater = new Gunzip((data, final) => {
    out.push(data);
    ended ||= final;
  });
  for (let at = 0; at < file.size; ) {
    const compressed = await file.read(at, Math.min(SLICE_BYTES, file.size - at));
    at += compressed.byteLength;
    try {
      inflater.push(compressed, at >= file.size);
    } catch {
      throw damaged();
    }
    while (out.length) yield { data: out.shift()!, fileBytes: at };
  }
  if (!ended) throw damaged();
}

async function* unxzPieces(file: ImageFile, damaged: () => Error): AsyncGenerator<Slice> {
  let at = 0;
  const source = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (at >= file.size) return controller.close();
      const data = await file.read(at, Math.min(SLICE_BYTES, file.size - at));
      at += data.byteLength;
      controller.enqueue(data);
    },
  });
  // Loaded when an xz file comes: it is not on the first visit's path.
  const { XzReadableStream } = await import("xz-decompress");
  const reader = new XzReadableStream(source).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read().catch(() => {
        throw damaged();
      });
      if (done) return;
      yield { data: value, fileBytes: at };
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
}

/**
 * The inflated size of an xz file, from the index at its end (xz file format 1.2: the stream
 * footer gives the index's size; the index lists each block's uncompressed size). One stream only.
 */
async function xzSize(file: ImageFile, damaged: () => Error): Promise<number> {
  if (file.size < 32) throw damaged();
  const footer = await file.read(file.size - 12, 12);
  if (footer[10] !== 0x59 || footer[11] !== 0x5a) throw damaged(); // "YZ"
  const indexBytes = (new DataView(footer.buffer, footer.byteOffset, 12).getUint32(4, true) + 1) * 4;
  if (indexBytes > file.size - 24 || indexBytes > 64 * 2 ** 20) throw damaged();
  const index = await file.read(file.size - 12 - indexBytes, indexBytes);
  let at = 0;
  const varint = () => {
    let value = 0;
    for (let shift = 0; shift < 63; shift += 7) {
      const byte = index[at++];
      if (byte === undefined) throw damaged();
      value += (byte & 0x7f) * 2 ** shift;
      if (!(byte & 0x80)) return value;
    }
    throw damaged();
  };
  if (index[at++] !== 0) throw damaged();
  const records = varint();
  let size = 0;
  for (let i = 0; i < records; i++) {
    varint(); // unpadded size
    size += varint();
  }
  return size;
}
