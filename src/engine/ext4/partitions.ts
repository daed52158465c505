/**
 * Finds the ext2/3/4 file systems on a disk: in MBR partitions (logical ones too), GPT partitions,
 * or the whole disk. Layouts: ext4-format.ts. Every candidate is probed for the superblock magic;
 * type bytes and GUIDs are not trusted (Sandglass's own images mark the root 0x83, others vary).
 */
import type { BlockDevice } from "./block-device.ts";
import { EXT_MAGIC, SUPERBLOCK_OFFSET } from "./ext4-format.ts";

const SECTOR = 512;
/** Logical partitions followed in an extended partition's chain, at most (a loop ends there). */
const MAX_LOGICAL = 128;
/** GPT entries read at most (the usual table has 128). */
const MAX_GPT_ENTRIES = 1024;

/** A file system found on a disk. */
export interface Volume {
  /** 1-based partition number as Linux names them (sda2 → 2), or 0 for a whole-disk file system. */
  number: number;
  offset: number;
  size: number;
  /** "mbr", "gpt" or "disk". */
  table: "mbr" | "gpt" | "disk";
  /** The partition's name (GPT) or volume label (ext4), when it has one. */
  label: string;
}

interface Candidate {
  number: number;
  offset: number;
  size: number;
  table: Volume["table"];
  label: string;
}

const u32 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset).getUint32(at, true);
const u64 = (b: Uint8Array, at: number) => u32(b, at) + u32(b, at + 4) * 2 ** 32;

/** The partitions a partition table lists (none if the disk has no table). */
export async function listPartitions(device: BlockDevice): Promise<Candidate[]> {
  if (device.size < 2 * SECTOR) return [];
  const mbr = await device.read(0, SECTOR);
  if (mbr[510] !== 0x55 || mbr[511] !== 0xaa) return [];
  const entries = [0, 1, 2, 3].map((i) => {
    const at = 446 + 16 * i;
    return { type: mbr[at + 4]!, start: u32(mbr, at + 8), sectors: u32(mbr, at + 12) };
  });
  if (entries.some((e) => e.type === 0xee)) return gptPartitions(device);
  const found: Candidate[] = [];
  for (const [i, e] of entries.entries()) {
    if (e.type === 0 || e.sectors === 0) continue;
    if (e.type === 0x05 || e.type === 0x0f || e.type === 0x85) {
      found.push(...(await logicalPartitions(device, e.start)));
      continue;
    }
    found.push({ number: i + 1, offset: e.start * SECTOR, size: e.sectors * SECTOR, table: "mbr", label: "" });
  }
  return found.filter((c) => c.offset < device.size);
}

/** Logical partitions: a chain of EBRs inside the extended partition starting at `base`. */
async function logicalPartitions(device: BlockDevice, base: number): Promise<Candidate[]> {
  const found: Candidate[] = [];
  let ebr = base;
  const seen = new Set<number>();
  for (let n = 0; n < MAX_LOGICAL && !seen.has(ebr) && (ebr + 1) * SECTOR <= device.size; n++) {
    seen.add(ebr);
    const sector = await device.read(ebr * SECTOR, SECTOR);
    if (sector[510] !== 0x55 || sector[511] !== 0xaa) break;
    const start = u32(sector, 446 + 8);
    const sectors = u32(sector, 446 + 12);
    if (sector[446 + 4] !== 0 && sectors > 0) {
      found.push({ number: 5 + n, offset: (ebr + start) * SECTOR, size: sectors * SECTOR, table: "mbr", label: "" });
    }
    const next = u32(sector, 462 + 8);
    if (sector[462 + 4] === 0 || next === 0) break;
    ebr = base + next;
  }
  return found;
}

async function gptPartitions(device: BlockDevice): Promise<Candidate[]> {
  const header = await device.read(SECTOR, SECTOR);
  if (new TextDecoder().decode(header.subarray(0, 8)) !== "EFI PART") return [];
  const entriesLba = u64(header, 72);
  const count = Math.min(u32(header, 80), MAX_GPT_ENTRIES);
  const entrySize = u32(header, 84);
  if (entrySize < 128 || entrySize > 4096 || entrySize % 8 !== 0) return [];
  const bytes = Math.ceil((count * entrySize) / SECTOR) * SECTOR;
  if (entriesLba * SECTOR + bytes > device.size || bytes === 0) return [];
  const table = await device.read(entriesLba * SECTOR, bytes);
  const found: Candidate[] = [];
  for (let i = 0; i < count; i++) {
    const e = table.subarray(i * entrySize, (i + 1) * entrySize);
    if (e.subarray(0, 16).every((b) => b === 0)) continue;
    const first = u64(e, 32);
    const last = u64(e, 40);
    if (last < first) continue;
    const nameBytes = e.subarray(56, 128);
    let name = new TextDecoder("utf-16le").decode(nameBytes);
    const nul = name.indexOf("\0");
    if (nul >= 0) name = name.slice(0, nul);
    found.push({ number: i + 1, offset: first * SECTOR, size: (last - first + 1) * SECTOR, table: "gpt", label: name });
  }
  return found;
}

/** True when an ext superblock's magic is where it should be at `offset`. */
async function hasExtMagic(device: BlockDevice, offset: number, size: number): Promise<boolean> {
  if (size < SUPERBLOCK_OFFSET + 1024 || offset + SUPERBLOCK_OFFSET + 1024 > device.size) return false;
  const sb = await device.read(offset + SUPERBLOCK_OFFSET, 1024);
  return sb[0x38] === (EXT_MAGIC & 0xff) && sb[0x39] === EXT_MAGIC >> 8;
}

/**
 * Every ext2/3/4 file system on the disk, in partition order: one per partition that has the
 * magic, else the whole disk if it has it. Empty when there is none.
 */
export async function findVolumes(device: BlockDevice): Promise<Volume[]> {
  const partitions = await listPartitions(device);
  const volumes: Volume[] = [];
  for (const p of partitions) {
    const size = Math.min(p.size, device.size - p.offset);
    if (await hasExtMagic(device, p.offset, size)) volumes.push({ ...p, size });
  }
  if (volumes.length === 0 && (await hasExtMagic(device, 0, device.size))) {
    volumes.push({ number: 0, offset: 0, size: device.size, table: "disk", label: "" });
  }
  return volumes;
}
