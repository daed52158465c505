/**
 * Snapshots: a checkpoint turned into repository files (format: repo-format.ts) so another
 * browser can open it. Building reads the disk at the checkpoint's point; only chunks the machine
 * changed get new refs, the rest keep the parent's, so a repository that has the parent already
 * has them. Uploading asks the repository what it lacks and sends only that.
 */
import { createSHA256 } from "hash-wasm";
import type { Disk } from "./disk.ts";
import { splitState } from "./checkpoint-format.ts";
import { gzip } from "./gzip.ts";
import { sha256Hex } from "./util.ts";
import { RepositoryError, type Fetch } from "./chunk-source.ts";
import {
  FORMAT,
  FORMAT_VERSION,
  STATE_PIECE_BYTES,
  chunkHash,
  chunkLength,
  chunkPath,
  manifestPath,
  newSnapshotId,
  referencedChunks,
  type ChunkRef,
  type DiskManifest,
  type Hardware,
  carriedMetadataChunks,
} from "./repo-format.ts";
import type { Point } from "./store-format.ts";

/** A snapshot ready to upload or bundle: its manifest and the files it adds (bytes as stored). */
export interface SnapshotFiles {
  manifest: DiskManifest;
  files: Map<ChunkRef, Uint8Array>;
}

export interface BuildOptions {
  disk: Disk;
  point: Point;
  state: Uint8Array;
  hardware: Hardware;
  description: string;
  thumbnail?: string;
}

/** Only worth compressing when it saves at least this share (as the import tool does). */
const MIN_SAVING = 0.1;
/** Parallel uploads. */
const UPLOAD_CONCURRENCY = 4;

/** The ref and stored bytes of a piece of content (gzip'd when that is clearly smaller). */
export async function storeForm(data: Uint8Array): Promise<{ ref: ChunkRef; stored: Uint8Array }> {
  const hash = await sha256Hex(data);
  const gz = await gzip(data);
  return gz.byteLength <= data.byteLength * (1 - MIN_SAVING) ? { ref: `${hash}.gz`, stored: gz } : { ref: hash, stored: data };
}

/** Pages per published piece on average, and the most a piece may hold. */
const PAGES_PER_PIECE = STATE_PIECE_BYTES / 4096;
const MAX_PIECE_BYTES = 3 * STATE_PIECE_BYTES;

/**
 * Cuts a machine state into repository pieces of about STATE_PIECE_BYTES. A state cut by page
 * (checkpoint-format.ts) would mean thousands of requests to open it; fixed-size pieces would all
 * shift when one RAM page becomes non-zero. So pages are grouped with content-defined ends: a
 * group ends after a page whose hash is zero modulo PAGES_PER_PIECE (on average every that many
 * pages), so an inserted page changes only its own group and the next publish re-uploads little.
 */
export async function groupState(state: Uint8Array): Promise<Uint8Array[]> {
  const groups: Uint8Array[] = [];
  const pages = splitState(state);
  // hash-wasm: synchronous per page (WebCrypto would be ~9,000 promises for a 64 MiB machine).
  const sha256 = await createSHA256();
  let start = 0;
  let at = 0;
  for (const page of pages) {
    sha256.init();
    sha256.update(page);
    const digest = sha256.digest("binary");
    const first32 = new DataView(digest.buffer, digest.byteOffset).getUint32(0);
    if (at + page.byteLength - start > MAX_PIECE_BYTES) {
      groups.push(state.subarray(start, at));
      start = at;
    }
    at += page.byteLength;
    if (first32 % PAGES_PER_PIECE === 0) {
      groups.push(state.subarray(start, at));
      start = at;
    }
  }
  if (start < at) groups.push(state.subarray(start, at));
  return groups;
}

/** Builds the snapshot of a checkpoint: the machine's disk at `point` and its state. */
export async function buildSnapshot(options: BuildOptions): Promise<SnapshotFiles> {
  const { disk, point } = options;
  const parent = disk.base.manifest;
  const files = new Map<ChunkRef, Uint8Array>();
  const chunks = [...parent.chunks];
  for (const index of await disk.changedChunks(point)) {
    const data = await disk.readAt(point, index * parent.chunkSize, chunkLength(parent, index));
    if (data.every((b) => b === 0)) {
      chunks[index] = null;
      continue;
    }
    const before = parent.chunks[index];
    const hash = await sha256Hex(data);
    if (before && chunkHash(before) === hash) continue; // written back unchanged
    const { ref, stored } = await storeForm(data);
    chunks[index] = ref;
    files.set(ref, stored);
  }
  const pieces: ChunkRef[] = [];
  for (const group of await groupState(options.state)) {
    const { ref, stored } = await storeForm(group);
    pieces.push(ref);
    files.set(ref, stored);
  }
  const manifest: DiskManifest = {
    format: FORMAT,
    version: FORMAT_VERSION,
    kind: "snapshot",
    name: newSnapshotId(),
    description: options.description,
    created: new Date().toISOString(),
    size: parent.size,
    chunkSize: parent.chunkSize,
    chunks,
    storedBytes: [...files.values()].reduce((n, f) => n + f.byteLength, 0),
    parent: { kind: parent.kind, name: parent.name },
    hardware: options.hardware,
    ...carriedMetadataChunks(parent, chunks),
    machine: {
      pieces,
      stateBytes: options.state.byteLength,
      memoryBytes: options.hardware.memoryBytes,
      ...(options.thumbnail ? { thumbnail: options.thumbnail } : {}),
    },
  };
  return { manifest, files };
}

export interface UploadResult {
  id: string;
  /** Files the repository lacked and got, and their bytes; files the snapshot needs in all. */
  uploadedFiles: number;
  uploadedBytes: number;
  totalFiles: number;
}

async function failure(response: Response, what: string): Promise<RepositoryError> {
  let detail = `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { error?: string };
    if (body.error) detail = body.error;
  } catch {
    // not JSON: keep the status
  }
  if (response.status === 401 || response.status === 403) detail += " (publishing needs the repository's upload token)";
  return new RepositoryError(`The repository refused ${what}: ${detail}`);
}

/** The chunk files of `refs` the repository lacks (asked with one request). */
export async function missingChunks(repo: string, refs: ChunkRef[], fetchFn: Fetch, token?: string): Promise<ChunkRef[]> {
  const auth: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
  const asked = await fetchFn(new URL("api/missing", repo).href, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...auth },
    body: JSON.stringify({ refs }),
  }).catch((err: unknown) => {
    throw new RepositoryError(`Could not reach the repository to publish: ${String(err)}`);
  });
  if (!asked.ok) throw await failure(asked, "the upload");
  return ((await asked.json()) as { missing: ChunkRef[] }).missing;
}

/**
 * Uploads what the repository lacks, then the manifest (which makes the snapshot exist). Files
 * not in the snapshot's own (an image a person brought) come from `load`.
 */
export async function uploadSnapshot(
  repo: string,
  snapshot: SnapshotFiles,
  fetchFn: Fetch,
  token?: string,
  load?: (ref: ChunkRef) => Promise<Uint8Array>,
): Promise<UploadResult> {
  const auth: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
  const refs = referencedChunks(snapshot.manifest);
  const missing = await missingChunks(repo, refs, fetchFn, token);
  let uploadedBytes = 0;
  const queue = [...missing];
  const worker = async () => {
    for (let ref = queue.shift(); ref !== undefined; ref = queue.shift()) {
      const body = snapshot.files.get(ref) ?? (await load?.(ref));
      if (!body) throw new RepositoryError(`The repository lacks ${ref.slice(0, 12)}…, which this snapshot shares with its parent.`);
      const put = await fetchFn(new URL(chunkPath(ref), repo).href, {
        method: "PUT",
        headers: { "Content-Type": "application/octet-stream", ...auth },
        body: body as Uint8Array<ArrayBuffer>,
      });
      if (!put.ok) throw await failure(put, `chunk ${ref.slice(0, 12)}…`);
      uploadedBytes += body.byteLength;
    }
  };
  await Promise.all(Array.from({ length: UPLOAD_CONCURRENCY }, worker));
  const manifestBody = JSON.stringify(snapshot.manifest);
  const put = await fetchFn(new URL(manifestPath("snapshot", snapshot.manifest.name), repo).href, {
    method: "PUT",
    headers: { "Content-Type": "application/json", ...auth },
    body: manifestBody,
  });
  if (!put.ok) throw await failure(put, "the snapshot manifest");
  return {
    id: snapshot.manifest.name,
    uploadedFiles: missing.length,
    uploadedBytes: uploadedBytes + manifestBody.length,
    totalFiles: refs.length,
  };
}
