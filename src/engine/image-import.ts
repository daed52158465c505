/**
 * Imports a person's own disk image (an ISO, a raw hard disk, a floppy; raw, gzip- or xz-compressed) into the local store as a
 * repository image of {@link LOCAL_REPO}: cut into chunks, hashed, zero chunks skipped, chunks
 * already stored not stored again. The file is read a slice at a time, so a 4 GiB image never
 * sits whole in memory. Either the whole image lands (its manifest last) or, on failure or
 * cancel, nothing it added is left.
 */
import { createSHA256, type IHasher } from "hash-wasm";
import type { LocalStore } from "./local-store.ts";
import { detectImage, DETECT_BYTES, NotAnImageError, type DetectedImage } from "./image-detect.ts";
import { compressionOf, openContent, type Content, type ImageFile } from "./image-content.ts";
import { manifestUrl, type Fetch } from "./chunk-source.ts";
import { imageUrl, probeRemote, urlFileName, type RemoteIdentity } from "./remote-image.ts";
import {
  DEFAULT_CHUNK_SIZE,
  FORMAT,
  FORMAT_VERSION,
  isValidImageName,
  type BootDevice,
  type DiskManifest,
  type Drive,
  type Hardware,
} from "./repo-format.ts";
import { LOCAL_REPO, type InputSettings, type MachineSource, type ManifestRecord } from "./store-format.ts";
import { equalBytes, sha256Hex } from "./util.ts";

export type { ImageFile };

/** The machine an image is imported for (stored in its manifest's `hardware`). */
export interface ImportSettings {
  bootDevice: BootDevice;
  memoryBytes: number;
  vgaMemoryBytes: number;
  /** An empty hard disk of this size beside the image (to install onto); 0 or absent: none. */
  secondDiskBytes?: number;
  /** Keys and the mouse on the screen (the machine's, not the image's: MachineRecord.input). */
  input?: InputSettings;
}

/** Largest empty second disk (v86's IDE disks take up to 2^32 sectors; the guest's log is the limit). */
export const MAX_SECOND_DISK = 64 * 2 ** 30;

/**
 * The disk of an image with an empty second hard disk (repo-format.ts `drives`): the image
 * zero-padded to a whole chunk, then the second disk. Without one, the image alone.
 */
function layout(imageBytes: number, chunkSize: number, settings: ImportSettings): { size: number; drives?: Drive[] } {
  const second = settings.secondDiskBytes ?? 0;
  if (!second) return { size: imageBytes };
  if (!Number.isSafeInteger(second) || second % chunkSize !== 0 || second > MAX_SECOND_DISK) {
    throw new Error(`A second disk must be a whole number of ${chunkSize / 1024} KiB, at most ${MAX_SECOND_DISK / 2 ** 30} GiB.`);
  }
  const at = Math.ceil(imageBytes / chunkSize) * chunkSize;
  const device = settings.bootDevice === "hda" ? "hdb" : "hda";
  return { size: at + second, drives: [{ device: settings.bootDevice, at: 0, bytes: imageBytes }, { device, at, bytes: second }] };
}

/** An image's name with its second disk's size, so the same file with and without one are two images. */
const withSecondDisk = (name: string, settings: ImportSettings) =>
  settings.secondDiskBytes ? `${name}-hd${Math.round(settings.secondDiskBytes / 2 ** 20)}m` : name;

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
  return detectContent(file, await openContent(file));
}

function detectContent(file: ImageFile, content: Content): DetectedImage {
  const detected = detectImage(file.name, content.size, content.head);
  return content.compression ? { ...detected, label: `${detected.label}, ${content.compression}-compressed` } : detected;
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
  const content = await openContent(file);
  const detected = detectContent(file, content);
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const started = performance.now();
  const whole = await createSHA256();
  const piece = await createSHA256();
  const zero = new Uint8Array(chunkSize);
  const padLast = Boolean(settings.secondDiskBytes);
  const chunks: (string | null)[] = [];
  // Chunks this import stored (and only those): what a failure or cancel takes out again.
  const added = new Set<string>();
  let storedBytes = 0;
  let writing: Promise<void> = Promise.resolve();
  const check = () => {
    if (options.signal?.aborted) throw new ImportCancelled();
  };
  try {
    let imageBytes = 0;
    for await (const { data: slice, fileBytes } of content.slices()) {
      check();
      imageBytes += slice.byteLength;
      whole.update(slice);
      const fresh = new Map<string, Uint8Array>();
      for (let at = 0; at < slice.byteLength; at += chunkSize) {
        let data = slice.subarray(at, Math.min(at + chunkSize, slice.byteLength));
        // The image's short last chunk is whole when a second disk follows it (zero-padded).
        if (padLast && data.byteLength < chunkSize) {
          data = new Uint8Array(chunkSize);
          data.set(slice.subarray(at));
        }
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
        // One transaction in flight while the next slice is read and hashed.
        await writing;
        writing = store.putChunks(fresh);
        for (const d of fresh.values()) storedBytes += d.byteLength;
      }
      // Counted in the file's bytes: a gzip'd file's inflated size is only sure at its end.
      options.onProgress?.({
        doneBytes: fileBytes,
        totalBytes: file.size,
        storedBytes,
        elapsedMs: performance.now() - started,
      });
    }
    await writing;
    check();
    const sha256 = whole.digest("hex");
    const name = withSecondDisk(ownImageName(file.name, sha256), settings);
    const disk = layout(imageBytes, chunkSize, settings);
    while (chunks.length * chunkSize < disk.size) chunks.push(null);
    const hardware = hardwareFor(settings, disk.drives);
    const manifest: DiskManifest = {
      format: FORMAT,
      version: FORMAT_VERSION,
      kind: "image",
      name,
      description: `${file.name}: ${detected.label}`,
      created: new Date().toISOString(),
      size: disk.size,
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
    await writing.catch(() => undefined);
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
  // A URL image's chunks are in its pins, not its manifest.
  const chunksOf = async (r: ManifestRecord) =>
    r.remote ? [...(await store.listPins(r.url)).values()].filter((c) => c !== null) : r.manifest.chunks.filter((c) => c !== null);
  const kept = new Set((await Promise.all(all.filter((r) => r.url !== url).map(chunksOf))).flat());
  const own = await chunksOf(mine);
  await store.deleteManifest(url);
  await store.deleteChunks(new Set(own.filter((c) => !kept.has(c))));
}

// ── from a URL ──────────────────────────────────────────────────────────────────────────────────

/** A URL image as detected, before anything is stored. */
export interface DetectedUrl {
  url: string;
  fileName: string;
  size: number;
  detected: DetectedImage;
}

async function detectUrl(text: string, fetchFn: Fetch): Promise<DetectedUrl & { identity: RemoteIdentity }> {
  const url = imageUrl(text);
  const fileName = urlFileName(url);
  const { identity, head } = await probeRemote(url, fetchFn, DETECT_BYTES);
  const compression = compressionOf(head);
  if (compression) {
    throw new NotAnImageError(
      fileName,
      `it is ${compression}-compressed, and a compressed image cannot be read a block at a time from a URL. Download it and open the file instead (it is inflated on the way in).`,
    );
  }
  return { url, fileName, size: identity.size, detected: detectImage(fileName, identity.size, head), identity };
}

/** Looks at the image at a URL (one Range request); throws with the reason it cannot be used. */
export async function inspectUrl(text: string, fetchFn: Fetch): Promise<DetectedUrl> {
  const { identity: _identity, ...found } = await detectUrl(text, fetchFn);
  return found;
}

/**
 * Makes an image of the file at a URL, read copy-on-read with Range requests (remote-image.ts):
 * only its identity is stored now, its chunks as the machine reads them. The same URL with the
 * same identity is the same image (its pinned chunks are kept); a changed file is a new image.
 */
export async function importUrl(
  store: LocalStore,
  text: string,
  settings: ImportSettings,
  fetchFn: Fetch,
  chunkSize = DEFAULT_CHUNK_SIZE,
): Promise<{ source: MachineSource; manifest: DiskManifest; detected: DetectedImage }> {
  const { url, fileName, detected, identity } = await detectUrl(text, fetchFn);
  const pinned = await sha256Hex(new TextEncoder().encode(JSON.stringify([identity.url, identity.size, identity.etag ?? "", identity.lastModified ?? ""])));
  const name = withSecondDisk(ownImageName(fileName, pinned), settings);
  const disk = layout(identity.size, chunkSize, settings);
  const source: MachineSource = { repo: LOCAL_REPO, kind: "image", name };
  const key = manifestUrl(source);
  const kept = await store.getManifest(key);
  if (kept) return { source, manifest: kept.manifest, detected };
  const manifest: DiskManifest = {
    format: FORMAT,
    version: FORMAT_VERSION,
    kind: "image",
    name,
    description: `${url}: ${detected.label}`,
    created: new Date().toISOString(),
    size: disk.size,
    chunkSize,
    // Not known yet (store-format.ts): filled in from the pins as chunks are read.
    chunks: new Array<null>(Math.ceil(disk.size / chunkSize)).fill(null),
    storedBytes: 0,
    hardware: hardwareFor(settings, disk.drives),
  };
  await store.putManifest({ url: key, manifest, fetched: Date.now(), remote: identity });
  return { source, manifest, detected };
}

function hardwareFor(settings: ImportSettings, drives?: Drive[]): Hardware {
  return {
    memoryBytes: settings.memoryBytes,
    network: false,
    sharedFolder: false,
    vgaMemoryBytes: settings.vgaMemoryBytes,
    bootDevice: settings.bootDevice,
    ...(drives ? { drives } : {}),
  };
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
