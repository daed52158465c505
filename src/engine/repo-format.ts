/**
 * The image repository format, "sandglass-disk" version 1. This file is the one place it is
 * defined: the import tool writes it, the server serves it, the disk worker reads it.
 *
 * A repository is a folder of static, immutable files (any static host or bucket can serve it):
 *
 *   images/<name>.json      manifest of a base image (name: [a-z0-9][a-z0-9._-]{0,63})
 *   snapshots/<id>.json     manifest of a published snapshot (id: 26 random base32 letters, so a
 *                           link cannot be guessed)
 *   chunks/<sha256>         a chunk stored as-is
 *   chunks/<sha256>.gz      a chunk stored gzip-compressed (only when that is smaller)
 *   bios/seabios.bin, bios/vgabios.bin   the BIOS images machines boot with
 *
 * The SHA-256 is always of the chunk's *uncompressed* content, so a chunk is stored once however
 * many images share it, and a reader verifies what it got before using it.
 *
 * Serving: a host may send a ".gz" chunk file as it is, or with "Content-Encoding: gzip" (the
 * Sandglass server does, so browsers inflate it natively); readers accept both. A reader retrying
 * a failed ".gz" file adds "?encoding=identity" to ask for the stored bytes as they are (hosts
 * that do not know the parameter ignore it).
 *
 * Manifest (JSON):
 *   format       "sandglass-disk"
 *   version      1 (readers refuse versions they do not know)
 *   kind         "image" | "snapshot"
 *   name         the image name (or snapshot id)
 *   description  free text shown to people
 *   created      ISO 8601 time of import
 *   size         disk size in bytes (a multiple of 512)
 *   chunkSize    bytes per chunk (a power of two ≥ 4096; the last chunk may be shorter)
 *   chunks       one entry per chunk in disk order: null for an all-zero chunk (not stored),
 *                else a chunk ref: "<sha256 hex>" or "<sha256 hex>.gz"
 *   sha256       SHA-256 of the whole raw image, for tools that check a full download
 *                (images only: a snapshot's disk is never read whole)
 *   storedBytes  bytes of distinct chunk files the image needs, as stored
 *
 * A snapshot manifest has the same fields (its `chunks` list the whole disk at that point, so a
 * reader never walks parents; chunks equal to the parent's have the parent's refs and are not
 * uploaded again), plus:
 *   parent       { kind, name } of the image or snapshot it was taken from
 *   machine      the machine state (v86 save_state()) to resume:
 *                  pieces      chunk refs whose concatenation (uncompressed) is the state
 *                  stateBytes  its length
 *                  memoryBytes guest RAM it was taken with (the page must match it)
 *                  thumbnail   optional small JPEG data URL of the screen
 * A snapshot's `chunkSize` equals its parent's. Manifests are immutable once written.
 * A snapshot may say `broughtImage: true` (added 2026-12-02): its parent is an image a person
 * brought into their browser, which the repository does not have; the snapshot lists the whole
 * disk, so its chunks are all a reader needs, and a repository accepts it without the parent.
 * An image manifest may name `booted`: the id of a snapshot of it booted to an idle shell, which
 * a new machine of the image resumes instead of cold-booting.
 *
 * Optional in both kinds (added 2026-12; a manifest without it means the first machine shape:
 * 64 MiB, no network card, no shared folder):
 *   hardware     the emulated machine the disk and state belong to; a state restores only into
 *                the same shape, so a snapshot repeats its parent's:
 *                  memoryBytes   guest RAM
 *                  network       a virtio network card (the page picks the backend)
 *                  sharedFolder  a virtio 9p shared folder (mount tag "host9p")
 *                  vgaMemoryBytes  optional (added 2026-12-02; absent means 8 MiB, v86's default):
 *                                  video RAM, a power of two from 256 KiB to 128 MiB. It is in
 *                                  every saved state whole, so a text-mode guest keeps it small.
 *                  bootDevice    optional (added 2026-12-02; absent means "hda"): where the disk
 *                                  is attached and booted from: "hda" (hard disk), "cdrom" (an
 *                                  ISO 9660 image, read-only to the guest) or "fda" (a floppy
 *                                  image of a standard size)
 *                  drives        optional (added 2026-12-02; absent means one drive, `bootDevice`,
 *                                  holding the whole disk): the machine's drives as ranges of its
 *                                  one disk, so one write log, checkpoint and rewind cover them all:
 *                                  a list of { device: "hda" | "hdb" | "cdrom" | "fda", at, bytes }
 *                                  (byte offset and length, multiples of 512, not overlapping, inside
 *                                  `size`; each device once; `bootDevice` among them). An image a
 *                                  person brought with an empty second hard disk (to install a CD
 *                                  onto) is its file, zero-padded to a whole chunk, then the disk.
 *                  serial1       optional (added 2026-12-03; absent means false): a second serial
 *                                  port (COM2: I/O 0x2F8, IRQ 3, v86's `uart1`), where the Sandglass
 *                                  guest agent listens (scripts/debian-root/src/sandglass-agent.c,
 *                                  src/vm/guest-agent.ts: restoring a file into the running guest).
 *                                  It is part of every saved state, so it is part of the shape: a
 *                                  state taken without it never restores into a machine with it, or
 *                                  the other way round.
 *
 * Optional in both kinds (added 2026-12-07; absent means none):
 *   metadataChunks  indices of the chunks holding the disk's ext2/3/4 metadata (the inode table
 *                   blocks of files in use, directories, extent tree blocks), ascending, each a
 *                   non-zero chunk: what a first `find /`, `ls -R` or `apt` reads, one directory
 *                   at a time, each a fetch of its own. A reader may fetch them in the background
 *                   once the machine runs; nothing depends on it. The import tool writes it when
 *                   asked (--metadata-chunks); a snapshot carries its parent's.
 */

export const FORMAT = "sandglass-disk";
export const FORMAT_VERSION = 1;
export const DEFAULT_CHUNK_SIZE = 64 * 1024;

/** "<sha256 hex>" or "<sha256 hex>.gz"; null marks an all-zero chunk. */
export type ChunkRef = string;

export interface DiskManifest {
  format: typeof FORMAT;
  version: typeof FORMAT_VERSION;
  kind: "image" | "snapshot";
  name: string;
  description: string;
  created: string;
  size: number;
  chunkSize: number;
  chunks: (ChunkRef | null)[];
  /** Images only. */
  sha256?: string;
  storedBytes: number;
  /** Snapshots only. */
  parent?: SourceRef;
  /** Snapshots only: the parent image is one a person brought, not in the repository. */
  broughtImage?: true;
  machine?: MachineStateRef;
  /** Images only: a snapshot of this image booted to an idle shell, opened instead of a cold boot. */
  booted?: string;
  hardware?: Hardware;
  /** Chunks holding the file system's metadata, to fetch in the background (see the notes above). */
  metadataChunks?: number[];
}

/** The emulated machine's shape (see the format notes above). */
export interface Hardware {
  memoryBytes: number;
  network: boolean;
  sharedFolder: boolean;
  vgaMemoryBytes: number;
  bootDevice: BootDevice;
  drives?: Drive[];
  /** A second serial port (COM2) for the guest agent (see the format notes above). */
  serial1?: boolean;
}

/** Where a machine's disk is attached (see the format notes above). */
export type BootDevice = "hda" | "cdrom" | "fda";
export const BOOT_DEVICES: readonly BootDevice[] = ["hda", "cdrom", "fda"];

/** A drive of the machine: a range of its disk (see the format notes above). */
export interface Drive {
  device: BootDevice | "hdb";
  at: number;
  bytes: number;
}
const DRIVE_DEVICES: readonly Drive["device"][] = ["hda", "hdb", "cdrom", "fda"];

/** The machine's drives: `hardware.drives`, or the whole disk on the boot device. */
export function drivesOf(hardware: Hardware, size: number): Drive[] {
  return hardware.drives ?? [{ device: hardware.bootDevice, at: 0, bytes: size }];
}

/** Video RAM of machines whose manifest does not say (v86's default). */
export const DEFAULT_VGA_MEMORY = 8 * 1024 * 1024;

/** The shape of machines whose manifest predates `hardware`. */
export const LEGACY_HARDWARE: Hardware = {
  memoryBytes: 64 * 1024 * 1024,
  network: false,
  sharedFolder: false,
  vgaMemoryBytes: DEFAULT_VGA_MEMORY,
  bootDevice: "hda",
};

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** The machine shape a manifest asks for (a snapshot's state was taken with its RAM). */
export function hardwareOf(manifest: Pick<DiskManifest, "hardware" | "machine">): Hardware {
  const hardware = manifest.hardware ?? LEGACY_HARDWARE;
  return manifest.machine ? { ...hardware, memoryBytes: manifest.machine.memoryBytes } : hardware;
}

function parseHardware(value: unknown): Hardware | undefined {
  if (value === undefined) return undefined;
  const h = value as Record<string, unknown> | null;
  if (
    typeof h !== "object" || h === null || !Number.isSafeInteger(h.memoryBytes) || (h.memoryBytes as number) < 1 << 20 ||
    (h.memoryBytes as number) > 2 ** 31 || typeof h.network !== "boolean" || typeof h.sharedFolder !== "boolean"
  ) {
    throw new ManifestError("hardware must give memoryBytes (1 MiB to 2 GiB), network and sharedFolder");
  }
  const vga = h.vgaMemoryBytes ?? DEFAULT_VGA_MEMORY;
  if (typeof vga !== "number" || !isPowerOfTwo(vga) || vga < 256 * 1024 || vga > 128 * 2 ** 20) {
    throw new ManifestError("hardware.vgaMemoryBytes must be a power of two from 256 KiB to 128 MiB");
  }
  const bootDevice = h.bootDevice ?? "hda";
  if (!BOOT_DEVICES.includes(bootDevice as BootDevice)) throw new ManifestError(`hardware.bootDevice must be one of ${BOOT_DEVICES.join(", ")}`);
  if (h.serial1 !== undefined && typeof h.serial1 !== "boolean") throw new ManifestError("hardware.serial1 must be true or false");
  return {
    memoryBytes: h.memoryBytes as number,
    network: h.network,
    sharedFolder: h.sharedFolder,
    vgaMemoryBytes: vga,
    bootDevice: bootDevice as BootDevice,
    ...(h.drives === undefined ? {} : { drives: parseDrives(h.drives, bootDevice as BootDevice) }),
    ...(h.serial1 === true ? { serial1: true } : {}),
  };
}

function parseDrives(value: unknown, bootDevice: BootDevice): Drive[] {
  const bad = (why: string) => new ManifestError(`hardware.drives: ${why}`);
  if (!Array.isArray(value) || value.length === 0) throw bad("must be a non-empty list");
  const drives = value.map((d: Record<string, unknown> | null) => {
    if (typeof d !== "object" || d === null || !DRIVE_DEVICES.includes(d.device as Drive["device"])) throw bad(`devices are ${DRIVE_DEVICES.join(", ")}`);
    const { at, bytes } = d;
    if (!Number.isSafeInteger(at) || !Number.isSafeInteger(bytes) || (at as number) < 0 || (bytes as number) <= 0 || (at as number) % 512 || (bytes as number) % 512) {
      throw bad("at and bytes must be multiples of 512 (bytes positive)");
    }
    return { device: d.device as Drive["device"], at: at as number, bytes: bytes as number };
  });
  if (new Set(drives.map((d) => d.device)).size !== drives.length) throw bad("a device is listed twice");
  if (!drives.some((d) => d.device === bootDevice)) throw bad("the boot device is not among them");
  const sorted = [...drives].sort((a, b) => a.at - b.at);
  if (sorted.some((d, i) => i > 0 && d.at < sorted[i - 1]!.at + sorted[i - 1]!.bytes)) throw bad("drives overlap");
  return drives;
}

export interface SourceRef {
  kind: "image" | "snapshot";
  name: string;
}

export interface MachineStateRef {
  pieces: ChunkRef[];
  stateBytes: number;
  memoryBytes: number;
  thumbnail?: string;
}

/** Largest manifest the server accepts and a reader parses (a 4 GiB disk of 64 KiB chunks fits). */
export const MAX_MANIFEST_BYTES = 8 * 1024 * 1024;
/** Largest chunk file (compressed or not) the server accepts (a state piece may reach 6 MiB). */
export const MAX_CHUNK_BYTES = 8 * 1024 * 1024;
/**
 * Typical piece size of a published machine state (a power of two ≥ 4 KiB; see snapshot.ts).
 * Opening a snapshot fetches every piece before it resumes, and a browser's worker pays several
 * ms of CPU per request on top of the bytes (traced on a two-core machine: ~0.5 s of the disk
 * worker's CPU for the 115 pieces of a 53 MiB Debian state at 512 KiB). 2 MiB pieces make it ~25
 * requests, at the cost of re-uploading more around each changed RAM page when re-publishing.
 */
export const STATE_PIECE_BYTES = 2 * 1024 * 1024;

export class ManifestError extends Error {
  constructor(message: string) {
    super(`Invalid image manifest: ${message}`);
    this.name = "ManifestError";
  }
}

const REF = /^[0-9a-f]{64}(\.gz)?$/;
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const SNAPSHOT_ID = /^[a-z2-7]{26}$/;

export function isValidImageName(name: string): boolean {
  return NAME.test(name) && !name.includes("..");
}

export function isValidSnapshotId(id: string): boolean {
  return SNAPSHOT_ID.test(id);
}

/** A new unguessable snapshot id: 130 random bits in base32. */
export function newSnapshotId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  const bytes = crypto.getRandomValues(new Uint8Array(26));
  return Array.from(bytes, (b) => alphabet[b & 31]).join("");
}

export function isChunkRef(value: unknown): value is ChunkRef {
  return typeof value === "string" && REF.test(value);
}

export function chunkHash(ref: ChunkRef): string {
  return ref.slice(0, 64);
}

export function isCompressed(ref: ChunkRef): boolean {
  return ref.endsWith(".gz");
}

/** Path of a chunk file, relative to the repository root. */
export function chunkPath(ref: ChunkRef): string {
  return `chunks/${ref}`;
}

/** Every chunk ref a manifest needs (disk and machine state), each once. */
export function referencedChunks(manifest: DiskManifest): ChunkRef[] {
  const refs = new Set<ChunkRef>();
  for (const ref of manifest.chunks) if (ref) refs.add(ref);
  for (const ref of manifest.machine?.pieces ?? []) refs.add(ref);
  return [...refs];
}

/** Path of a manifest, relative to the repository root. */
export function manifestPath(kind: "image" | "snapshot", name: string): string {
  return `${kind === "image" ? "images" : "snapshots"}/${encodeURIComponent(name)}.json`;
}

/** Uncompressed length of chunk `index` (the last chunk may be short). */
export function chunkLength(manifest: Pick<DiskManifest, "size" | "chunkSize">, index: number): number {
  return Math.min(manifest.chunkSize, manifest.size - index * manifest.chunkSize);
}

/** Checks untrusted JSON against the format and returns it typed; throws ManifestError. */
export function parseManifest(json: unknown): DiskManifest {
  if (typeof json !== "object" || json === null) throw new ManifestError("not a JSON object");
  const m = json as Record<string, unknown>;
  if (m.format !== FORMAT) throw new ManifestError(`format is ${JSON.stringify(m.format)}, expected "${FORMAT}"`);
  if (m.version !== FORMAT_VERSION) {
    throw new ManifestError(`version ${String(m.version)} is not supported (this Sandglass reads version ${FORMAT_VERSION})`);
  }
  if (m.kind !== "image" && m.kind !== "snapshot") throw new ManifestError("kind must be image or snapshot");
  if (typeof m.name !== "string" || m.name.length === 0) throw new ManifestError("name is missing");
  const size = m.size;
  const chunkSize = m.chunkSize;
  if (!Number.isSafeInteger(size) || (size as number) <= 0 || (size as number) % 512 !== 0) {
    throw new ManifestError("size must be a positive multiple of 512");
  }
  if (
    !Number.isSafeInteger(chunkSize) ||
    (chunkSize as number) < 4096 ||
    ((chunkSize as number) & ((chunkSize as number) - 1)) !== 0
  ) {
    throw new ManifestError("chunkSize must be a power of two of at least 4096");
  }
  if (!Array.isArray(m.chunks)) throw new ManifestError("chunks must be a list");
  const expected = Math.ceil((size as number) / (chunkSize as number));
  if (m.chunks.length !== expected) {
    throw new ManifestError(`chunks lists ${m.chunks.length} entries, the size needs ${expected}`);
  }
  m.chunks.forEach((ref, i) => {
    if (ref !== null && !isChunkRef(ref)) throw new ManifestError(`chunk ${i} is not a valid chunk reference`);
  });
  const validName = m.kind === "image" ? isValidImageName(m.name) : isValidSnapshotId(m.name);
  if (!validName) throw new ManifestError(`"${m.name}" is not a valid ${m.kind} name`);
  if (m.kind === "image" && (typeof m.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(m.sha256))) {
    throw new ManifestError("sha256 is missing");
  }
  const hardware = parseHardware(m.hardware);
  if (hardware?.drives?.some((d) => d.at + d.bytes > (size as number))) throw new ManifestError("hardware.drives reach past the disk's size");
  let parent: SourceRef | undefined;
  let machine: MachineStateRef | undefined;
  if (m.kind === "snapshot") {
    const p = m.parent as Record<string, unknown> | undefined;
    if (
      typeof p !== "object" || p === null || (p.kind !== "image" && p.kind !== "snapshot") || typeof p.name !== "string" ||
      !(p.kind === "image" ? isValidImageName(p.name) : isValidSnapshotId(p.name))
    ) {
      throw new ManifestError("a snapshot needs a valid parent");
    }
    parent = { kind: p.kind, name: p.name };
    const ms = m.machine as Record<string, unknown> | undefined;
    if (typeof ms !== "object" || ms === null || !Array.isArray(ms.pieces) || !ms.pieces.every(isChunkRef)) {
      throw new ManifestError("a snapshot needs its machine state pieces");
    }
    if (!Number.isSafeInteger(ms.stateBytes) || !Number.isSafeInteger(ms.memoryBytes)) {
      throw new ManifestError("machine.stateBytes and machine.memoryBytes must be integers");
    }
    machine = {
      pieces: ms.pieces as ChunkRef[],
      stateBytes: ms.stateBytes as number,
      memoryBytes: ms.memoryBytes as number,
      ...(typeof ms.thumbnail === "string" && ms.thumbnail.startsWith("data:image/") ? { thumbnail: ms.thumbnail } : {}),
    };
  }
  return {
    format: FORMAT,
    version: FORMAT_VERSION,
    kind: m.kind,
    name: m.name,
    description: typeof m.description === "string" ? m.description : "",
    created: typeof m.created === "string" ? m.created : "",
    size: size as number,
    chunkSize: chunkSize as number,
    chunks: m.chunks as (ChunkRef | null)[],
    ...(typeof m.sha256 === "string" ? { sha256: m.sha256 } : {}),
    storedBytes: typeof m.storedBytes === "number" ? m.storedBytes : 0,
    ...(parent ? { parent } : {}),
    ...(parent?.kind === "image" && m.broughtImage === true ? { broughtImage: true as const } : {}),
    ...(machine ? { machine } : {}),
    ...(m.kind === "image" && typeof m.booted === "string" && isValidSnapshotId(m.booted) ? { booted: m.booted } : {}),
    ...(hardware ? { hardware } : {}),
    ...(m.metadataChunks !== undefined ? { metadataChunks: parseMetadataChunks(m.metadataChunks, m.chunks as (ChunkRef | null)[]) } : {}),
  };
}

/**
 * A snapshot's `metadataChunks`: its parent's, less any chunk the snapshot's disk has as zeros
 * (the field names stored chunks only). Undefined when the parent has none.
 */
export function carriedMetadataChunks(parent: DiskManifest, chunks: readonly (ChunkRef | null)[]): { metadataChunks?: number[] } {
  return parent.metadataChunks ? { metadataChunks: parent.metadataChunks.filter((i) => chunks[i] !== null) } : {};
}

function parseMetadataChunks(list: unknown, chunks: (ChunkRef | null)[]): number[] {
  if (!Array.isArray(list)) throw new ManifestError("metadataChunks must be a list");
  list.forEach((n: unknown, i) => {
    if (!Number.isSafeInteger(n) || (n as number) < 0 || (n as number) >= chunks.length || chunks[n as number] === null) {
      throw new ManifestError(`metadataChunks[${i}] is not a stored chunk of the disk`);
    }
    if (i > 0 && (n as number) <= (list[i - 1] as number)) throw new ManifestError("metadataChunks must be ascending");
  });
  return list as number[];
}
