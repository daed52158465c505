/**
 * Imports a person's own disk image (an ISO, a raw hard disk, a floppy) into the local store as a
 * repository image of {@link LOCAL_REPO}: cut into chunks, hashed, zero chunks skipped, chunks
 * already stored not stored again. The file is read a slice at a time, so a 4 GiB image never
 * sits whole in memory. Either the whole image lands (its manifest last) or, on failure or
 * cancel, nothing it added is left.
 */
import { createSHA256, type IHasher } from "hash-wasm";
import type { LocalStore } from "./local-store.ts";
import { detectImage, DETECT_BYTES, type DetectedImage } from "./image-detect.ts";
import { manifestUrl } from "./chunk-source.ts";
import {
  DEFAULT_CHUNK_SIZE,
  FORMAT,
  FORMAT_VERSION,
  isValidImageName,
  type BootDevice,
  type DiskManifest,
  type Hardware,
} from "./repo-format.ts";
import { LOCAL_REPO, type MachineSource } from "./store-format.ts";
import { equalBytes } from "./util.ts";

/** What the importer reads: a File in the browser, a file on disk in Node. */
export interface ImageFile {
  name: string;
  size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
}

/** The machine an image is imported for (stored in its manifest's `hardware`). */
export interface ImportSettings {
  bootDevice: BootDevice;
  memoryBytes: number;
  vgaMemoryBytes: number;
}

export interface ImportProgress {
  doneBytes: number;
  totalBytes: number;
  /** Bytes of new chunks stored so far (zero and already-stored chunks cost nothing). */
  storedBytes: number;
  elapsedMs: number;
}

/** The person cancelled the import. */
export class ImportCancelled extends Error {
  constructor() {
    super("The import was cancelled; nothing of it was kept.");
    this.name = "ImportCancelled";
  }
}

/** Bytes read from the file per step (and per IndexedDB transaction). */
const SLICE_BYTES = 8 * 1024 * 1024;

/** A `File` as the importer reads it. */
export function fileImage(file: File): ImageFile {
  return {
    name: file.name,
    size: file.size,
    read: async (offset, length) => new Uint8Array(await file.slice(offset, offset + length).arrayBuffer()),
  };
}

/** Detects what the file is (see image-detect.ts); throws NotAnImageError with the reason. */
export async function inspectImage(file: ImageFile): Promise<DetectedImage> {
  return detectImage(file.name, file.size, file.size === 0 ? new Uint8Array(0) : await file.read(0, Math.min(DETECT_BYTES, file.size)));
}

/** An image name from the file's name and content: the same file imported twice is one image. */
export function ownImageName(fileName: string, sha256: string): string {
  const stem =
    fileName
      .toLowerCase()
      .replace(/\.[a-z0-9]{1,4}$/, "")
      .replace(/[^a-z0-9._-]+/g, "-")
      .replace(/^[^a-z0-9]+|[-.]+$/g, "")
      .slice(0, 40) || "image";
  const name = `${stem}-${sha256.slice(0, 8)}`;
  return isValidImageName(name) ? name : `image-${sha256.slice(0, 8)}`;
}

export interface ImportOptions {
  onProgress?: (progress: ImportProgress) => void;
  signal?: AbortSignal;
  chunkSize?: number;
}

/**
 * Imports `file` as an image of the local repository; returns where a machine finds it. The file
 * is detected first (a file that is no image is refused before anything is stored).
 */
export async function importImage(
  store: LocalStore,
  file: ImageFile,
  settings: ImportSettings,
  options: ImportOptions = {},
): Promise<{ source: MachineSource; manifest: DiskManifest; detected: DetectedImage }> {
  const detected = await inspectImage(file);
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const started = performance.now();
  const whole = await createSHA256();
  const piece = await createSHA256();
  const zero = new Uint8Array(chunkSize);
  const chunks: (string | null)[] = [];
  // Chunks this import stored (and only those): what a failure or cancel takes out again.
  const added = new Set<string>();
  let storedBytes = 0;
  const check = () => {
    if (options.signal?.aborted) throw new ImportCancelled();
  };
  try {
    for (let offset = 0; offset < file.size; offset += SLICE_BYTES) {
      check();
      const slice = await file.read(offset, Math.min(SLICE_BYTES, file.size - offset));
      whole.update(slice);
      const fresh = new Map<string, Uint8Array>();
      for (let at = 0; at < slice.byteLength; at += chunkSize) {
        const data = slice.subarray(at, Math.min(at + chunkSize, slice.byteLength));
        if (isZero(data, zero)) {
          chunks.push(null);
          continue;
        }
        const hash = hexDigest(piece, data);
        chunks.push(hash);
        // A copy: a view would keep the whole slice alive in IndexedDB's value.
        if (!added.has(hash)) fresh.set(hash, data.slice());
      }
      const hashes = [...fresh.keys()];
      const stored = await store.hasChunks(hashes);
      hashes.forEach((h, i) => stored[i] && fresh.delete(h));
      check();
      if (fresh.size) {
        for (const h of fresh.keys()) added.add(h);
        await store.putChunks(fresh);
        for (const d of fresh.values()) storedBytes += d.byteLength;
      }
      options.onProgress?.({
        doneBytes: Math.min(file.size, offset + SLICE_BYTES),
        totalBytes: file.size,
        storedBytes,
        elapsedMs: performance.now() - started,
      });
    }
    check();
    const sha256 = whole.digest("hex");
    const name = ownImageName(file.name, sha256);
    const hardware: Hardware = {
      memoryBytes: settings.memoryBytes,
      network: false,
      sharedFolder: false,
      vgaMemoryBytes: settings.vgaMemoryBytes,
      bootDevice: settings.bootDevice,
    };
    const manifest: DiskManifest = {
      format: FORMAT,
      version: FORMAT_VERSION,
      kind: "image",
      name,
      description: `${file.name}: ${detected.label}`,
      created: new Date().toISOString(),
      size: file.size,
      chunkSize,
      chunks,
      sha256,
      storedBytes: new Set(chunks.filter((c) => c !== null)).size * chunkSize,
      hardware,
    };
    const source: MachineSource = { repo: LOCAL_REPO, kind: "image", name };
    await store.putManifest({ url: manifestUrl(source), manifest, fetched: Date.now() });
    return { source, manifest, detected };
  } catch (err) {
    // Leave nothing behind: the chunks this import added are used by no manifest yet.
    await store.deleteChunks(added).catch(() => undefined);
    throw err;
  }
}

/**
 * Deletes an imported image (its manifest, and its chunks no other imported image uses) once no
 * machine uses it any more; repository chunks in the cache are the repository's to serve again.
 */
export async function forgetOwnImage(store: LocalStore, source: MachineSource): Promise<void> {
  if (source.repo !== LOCAL_REPO || source.kind !== "image") return;
  if ((await store.listMachines()).some((m) => m.source.repo === source.repo && m.source.name === source.name)) return;
  const url = manifestUrl(source);
  const all = await store.listManifests(LOCAL_REPO);
  const mine = all.find((r) => r.url === url);
  if (!mine) return;
  const kept = new Set(all.filter((r) => r.url !== url).flatMap((r) => r.manifest.chunks.filter((c) => c !== null)));
  await store.deleteManifest(url);
  await store.deleteChunks(new Set(mine.manifest.chunks.filter((c): c is string => c !== null && !kept.has(c))));
}

function hexDigest(hasher: IHasher, data: Uint8Array): string {
  hasher.init();
  hasher.update(data);
  return hasher.digest("hex");
}

/** True when `data` is all zeros (`zero` is at least as long). */
function isZero(data: Uint8Array, zero: Uint8Array): boolean {
  return data[0] === 0 && data[data.length - 1] === 0 && equalBytes(data, zero.subarray(0, data.length));
}
