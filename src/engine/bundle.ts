/**
 * Bundle files (`.sandglass`): snapshots with every chunk file they need, for sharing without a
 * server. All integers little-endian.
 *
 * Format version 1 (one point):
 *
 *   bytes 0..15   "SANDGLASS-BUNDLE" (ASCII)
 *   u32           format version (1)
 *   u32           header length H
 *   H bytes       header, UTF-8 JSON: { manifest: DiskManifest (kind "snapshot"),
 *                                       files: [{ ref, offset, length }] }
 *   the rest      file bodies as a repository stores them (gzip bytes for ".gz" refs), each at
 *                 `offset` from the start of this section
 *
 * Format version 2 (added 2026-12-03: several points of one machine, so one file can be diffed
 * and browsed at each; `npm run sandglass`): the same layout with version 2 and the header
 *
 *   { points: [{ label: PointLabel, manifest: DiskManifest (kind "snapshot") }],
 *     files: [{ ref, offset, length }] }
 *
 * One files table serves every point: a chunk two points share is stored once. PointLabel says
 * which point of the machine's timeline it was: { name?: checkpoint or bookmark name,
 * time: ms since the epoch, branch?: number, seq?: number, checkpoint?: checkpoint id }.
 * A one-point export is still written as version 1 (older Sandglass versions open it); readers
 * take a version 1 file as one point labelled by its manifest.
 *
 * Readers verify every file against its ref before keeping it, like chunks from a repository,
 * and refuse a bundle missing any file a point needs.
 */
import { chunkHash, isChunkRef, isCompressed, parseManifest, referencedChunks, type ChunkRef, type DiskManifest } from "./repo-format.ts";
import { sha256Hex } from "./util.ts";
import { gunzip } from "./gzip.ts";
import type { Disk } from "./disk.ts";
import { buildSnapshot, storeForm, type BuildOptions } from "./snapshot.ts";

const MAGIC = "SANDGLASS-BUNDLE";
/** The version written for one point (see above). */
export const BUNDLE_VERSION = 1;
/** The version written for several points. */
export const BUNDLE_POINTS_VERSION = 2;
/** Most points one file may carry (a damaged header cannot ask for more). */
const MAX_POINTS = 4096;

/** Which point of a machine's timeline a bundle's point is. */
export interface PointLabel {
  name?: string;
  /** Milliseconds since the epoch. */
  time: number;
  branch?: number;
  seq?: number;
  checkpoint?: string;
}

export interface BundlePoint {
  label: PointLabel;
  manifest: DiskManifest;
}

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
  return encode(BUNDLE_VERSION, { manifest }, files);
}

/** Several points in one file (format version 2): one files table shared by every point. */
export function encodePoints(points: readonly BundlePoint[], files: ReadonlyMap<ChunkRef, Uint8Array>): Uint8Array {
  if (points.length === 0) throw new Error("A bundle needs at least one point.");
  return encode(BUNDLE_POINTS_VERSION, { points }, files);
}

function encode(version: number, head: object, files: ReadonlyMap<ChunkRef, Uint8Array>): Uint8Array {
  const entries: FileEntry[] = [];
  let offset = 0;
  for (const [ref, body] of files) {
    entries.push({ ref, offset, length: body.byteLength });
    offset += body.byteLength;
  }
  const header = new TextEncoder().encode(JSON.stringify({ ...head, files: entries }));
  const out = new Uint8Array(24 + header.byteLength + offset);
  out.set(new TextEncoder().encode(MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(16, version, true);
  view.setUint32(20, header.byteLength, true);
  out.set(header, 24);
  const body = 24 + header.byteLength;
  for (const e of entries) out.set(files.get(e.ref)!, body + e.offset);
  return out;
}

/**
 * Parses and verifies a bundle; returns one point's manifest (the first unless `point` says) and
 * every file's content (uncompressed) by hash.
 */
export async function decodeBundle(bytes: Uint8Array, point = 0): Promise<{ manifest: DiskManifest; contents: Map<string, Uint8Array> }> {
  const { points, contents } = await decodeBundlePoints(bytes);
  const chosen = points[point];
  if (!chosen) throw new BundleError(`it has no point ${point} (it has ${points.length}).`);
  return { manifest: chosen.manifest, contents };
}

/** Parses and verifies a bundle of any version: its points, and every file's content by hash. */
export async function decodeBundlePoints(bytes: Uint8Array): Promise<{ points: BundlePoint[]; contents: Map<string, Uint8Array> }> {
  if (bytes.byteLength < 24 || new TextDecoder().decode(bytes.subarray(0, 16)) !== MAGIC) {
    throw new BundleError("it does not start like one.");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(16, true);
  if (version !== BUNDLE_VERSION && version !== BUNDLE_POINTS_VERSION) {
    throw new BundleError(`format version ${version} is not supported (expected ${BUNDLE_VERSION} or ${BUNDLE_POINTS_VERSION}).`);
  }
  const headerLength = view.getUint32(20, true);
  if (24 + headerLength > bytes.byteLength) throw new BundleError("it is truncated.");
  let header: { manifest?: unknown; points?: unknown; files?: unknown };
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(24, 24 + headerLength))) as typeof header;
  } catch {
    throw new BundleError("its header is damaged.");
  }
  const raw: { label: unknown; manifest: unknown }[] =
    version === BUNDLE_VERSION
      ? [{ label: null, manifest: header.manifest }]
      : Array.isArray(header.points) && header.points.length > 0 && header.points.length <= MAX_POINTS
        ? (header.points as { label: unknown; manifest: unknown }[])
        : [];
  if (raw.length === 0) throw new BundleError("its list of points is missing or damaged.");
  const points = raw.map((p, i): BundlePoint => {
    let manifest: DiskManifest;
    try {
      manifest = parseManifest(p?.manifest);
    } catch (err) {
      throw new BundleError(`${raw.length > 1 ? `point ${i}: ` : ""}${err instanceof Error ? err.message : String(err)}`);
    }
    if (manifest.kind !== "snapshot") throw new BundleError("it holds no snapshot.");
    return { label: parseLabel(p?.label, manifest), manifest };
  });
  if (!Array.isArray(header.files)) throw new BundleError("its file list is missing.");
  const body = 24 + headerLength;
  const contents = new Map<string, Uint8Array>();
  for (const entry of header.files as FileEntry[]) {
    if (!isChunkRef(entry.ref) || !Number.isSafeInteger(entry.offset) || !Number.isSafeInteger(entry.length) || entry.offset < 0 || entry.length < 0) {
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
  const absent = new Set(points.flatMap((p) => referencedChunks(p.manifest)).filter((ref) => !contents.has(chunkHash(ref))));
  if (absent.size > 0) throw new BundleError(`${absent.size} of the files it needs are missing.`);
  return { points, contents };
}

/** A point's label as stored, or one made from its manifest (version 1, or a damaged label). */
function parseLabel(json: unknown, manifest: DiskManifest): PointLabel {
  const l = (typeof json === "object" && json !== null ? json : {}) as Record<string, unknown>;
  const time = typeof l.time === "number" && Number.isFinite(l.time) ? l.time : Date.parse(manifest.created) || 0;
  return {
    time,
    ...(typeof l.name === "string" ? { name: l.name } : manifest.description && json === null ? { name: manifest.description } : {}),
    ...(Number.isSafeInteger(l.branch) ? { branch: l.branch as number } : {}),
    ...(Number.isSafeInteger(l.seq) ? { seq: l.seq as number } : {}),
    ...(typeof l.checkpoint === "string" ? { checkpoint: l.checkpoint } : {}),
  };
}

/** One point to put in a bundle: a disk point and its machine state (see buildSnapshot). */
export interface PointSpec extends Omit<BuildOptions, "disk"> {
  label: PointLabel;
}

/**
 * Several points of a machine in one bundle (version 2; version 1 for a single point): each a
 * snapshot (snapshot.ts) sharing the files table, with the base image's chunks they use, which
 * `loadBase` gives (DiskService.exportBundle reads them from the ChunkSource).
 */
export async function bundlePoints(
  disk: Disk,
  specs: readonly PointSpec[],
  loadBase: (ref: ChunkRef) => Promise<Uint8Array>,
): Promise<Uint8Array> {
  const files = new Map<ChunkRef, Uint8Array>();
  const points: BundlePoint[] = [];
  for (const spec of specs) {
    const { label, ...options } = spec;
    const snapshot = await buildSnapshot({ ...options, disk });
    for (const [ref, body] of snapshot.files) files.set(ref, body);
    points.push({ label, manifest: snapshot.manifest });
  }
  const have = new Set([...files.keys()].map(chunkHash));
  for (const ref of new Set(points.flatMap((p) => referencedChunks(p.manifest)))) {
    if (have.has(chunkHash(ref))) continue;
    const { ref: stored, stored: bytes } = await storeForm(await loadBase(ref));
    files.set(stored, bytes);
    have.add(chunkHash(ref));
  }
  return points.length === 1 ? encodeBundle(points[0]!.manifest, files) : encodePoints(points, files);
}

/** A point of a decoded bundle as a disk to read (what `npm run sandglass` browses). */
export function bundleDisk(manifest: DiskManifest, contents: ReadonlyMap<string, Uint8Array>): { size: number; read(offset: number, length: number): Promise<Uint8Array> } {
  const { size, chunkSize } = manifest;
  return {
    size,
    read: async (offset, length) => {
      if (offset < 0 || offset + length > size) throw new RangeError(`read ${offset}+${length} is outside the ${size}-byte disk`);
      const out = new Uint8Array(length);
      for (let at = offset; at < offset + length; ) {
        const index = Math.floor(at / chunkSize);
        const chunkStart = index * chunkSize;
        const to = Math.min(offset + length, chunkStart + chunkSize);
        const ref = manifest.chunks[index];
        if (ref) {
          const chunk = contents.get(chunkHash(ref));
          if (!chunk) throw new BundleError(`chunk ${index} is missing.`);
          out.set(chunk.subarray(at - chunkStart, to - chunkStart), at - offset);
        }
        at = to;
      }
      return out;
    },
  };
}

/** Byte ranges of the disk whose chunks differ between two points of a bundle (same disk). */
export function changedChunkRanges(a: DiskManifest, b: DiskManifest): { offset: number; length: number }[] {
  if (a.size !== b.size || a.chunkSize !== b.chunkSize) return [{ offset: 0, length: Math.max(a.size, b.size) }];
  const out: { offset: number; length: number }[] = [];
  a.chunks.forEach((ref, i) => {
    const other = b.chunks[i] ?? null;
    if ((ref === null ? null : chunkHash(ref)) !== (other === null ? null : chunkHash(other))) {
      out.push({ offset: i * a.chunkSize, length: Math.min(a.chunkSize, a.size - i * a.chunkSize) });
    }
  });
  return out;
}
