/**
 * Bundle files (`.sandglass`): one snapshot with every chunk file it needs, for sharing without
 * a server. Format version 1, all integers little-endian:
 *
 *   bytes 0..15   "SANDGLASS-BUNDLE" (ASCII)
 *   u32           format version (1)
 *   u32           header length H
 *   H bytes       header, UTF-8 JSON: { manifest: DiskManifest (kind "snapshot"),
 *                                       files: [{ ref, offset, length }] }
 *   the rest      file bodies as a repository stores them (gzip bytes for ".gz" refs), each at
 *                 `offset` from the start of this section
 *
 * Readers verify every file against its ref before keeping it, like chunks from a repository.
 */
import { chunkHash, isChunkRef, isCompressed, parseManifest, referencedChunks, type ChunkRef, type DiskManifest } from "./repo-format.ts";
import { sha256Hex } from "./util.ts";
import { gunzip } from "./gzip.ts";

const MAGIC = "SANDGLASS-BUNDLE";
export const BUNDLE_VERSION = 1;

export class BundleError extends Error {
  constructor(message: string) {
    super(`This file is not a usable Sandglass snapshot: ${message}`);
    this.name = "BundleError";
  }
}

interface FileEntry {
  ref: ChunkRef;
  offset: number;
  length: number;
}

export function encodeBundle(manifest: DiskManifest, files: ReadonlyMap<ChunkRef, Uint8Array>): Uint8Array {
  const entries: FileEntry[] = [];
  let offset = 0;
  for (const [ref, body] of files) {
    entries.push({ ref, offset, length: body.byteLength });
    offset += body.byteLength;
  }
  const header = new TextEncoder().encode(JSON.stringify({ manifest, files: entries }));
  const out = new Uint8Array(24 + header.byteLength + offset);
  out.set(new TextEncoder().encode(MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(16, BUNDLE_VERSION, true);
  view.setUint32(20, header.byteLength, true);
  out.set(header, 24);
  const body = 24 + header.byteLength;
  for (const e of entries) out.set(files.get(e.ref)!, body + e.offset);
  return out;
}

/** Parses and verifies a bundle; returns the manifest and each file's content (uncompressed) by hash. */
export async function decodeBundle(bytes: Uint8Array): Promise<{ manifest: DiskManifest; contents: Map<string, Uint8Array> }> {
  if (bytes.byteLength < 24 || new TextDecoder().decode(bytes.subarray(0, 16)) !== MAGIC) {
    throw new BundleError("it does not start like one.");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(16, true);
  if (version !== BUNDLE_VERSION) throw new BundleError(`format version ${version} is not supported (expected ${BUNDLE_VERSION}).`);
  const headerLength = view.getUint32(20, true);
  if (24 + headerLength > bytes.byteLength) throw new BundleError("it is truncated.");
  let header: { manifest?: unknown; files?: unknown };
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(24, 24 + headerLength))) as typeof header;
  } catch {
    throw new BundleError("its header is damaged.");
  }
  let manifest: DiskManifest;
  try {
    manifest = parseManifest(header.manifest);
  } catch (err) {
    throw new BundleError(err instanceof Error ? err.message : String(err));
  }
  if (manifest.kind !== "snapshot") throw new BundleError("it holds no snapshot.");
  if (!Array.isArray(header.files)) throw new BundleError("its file list is missing.");
  const body = 24 + headerLength;
  const contents = new Map<string, Uint8Array>();
  for (const entry of header.files as FileEntry[]) {
    if (!isChunkRef(entry.ref) || !Number.isSafeInteger(entry.offset) || !Number.isSafeInteger(entry.length)) {
      throw new BundleError("its file list is damaged.");
    }
    if (body + entry.offset + entry.length > bytes.byteLength) throw new BundleError("it is truncated.");
    const stored = bytes.subarray(body + entry.offset, body + entry.offset + entry.length);
    let content: Uint8Array;
    try {
      content = isCompressed(entry.ref) ? gunzip(stored) : stored.slice();
    } catch {
      throw new BundleError(`file ${entry.ref.slice(0, 12)}… is damaged.`);
    }
    if ((await sha256Hex(content)) !== chunkHash(entry.ref)) {
      throw new BundleError(`file ${entry.ref.slice(0, 12)}… does not match its hash.`);
    }
    contents.set(chunkHash(entry.ref), content);
  }
  const absent = referencedChunks(manifest).filter((ref) => !contents.has(chunkHash(ref)));
  if (absent.length > 0) throw new BundleError(`${absent.length} of the files it needs are missing.`);
  return { manifest, contents };
}
