/**
 * What the ext4 reader reads from: any async random-access device (a disk at a timeline point, a
 * bundle's chunks, a file in a test), and a bounded, batching block cache over it.
 */
import { ByteLru } from "../lru.ts";
import { check, UnreadableDiskError } from "./ext4-format.ts";

/** Bytes of a disk as it is at one point. Offsets and lengths the reader asks for are 512-aligned. */
export interface BlockDevice {
  readonly size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
}

/** Blocks kept in memory per file system view (a directory walk re-reads inode table blocks). */
export const CACHE_BYTES = 16 * 1024 * 1024;
/** Longest run of contiguous blocks fetched in one device read. */
const MAX_RUN_BYTES = 1024 * 1024;

/** A window of a device: a partition. */
export function sliceDevice(device: BlockDevice, offset: number, size: number): BlockDevice {
  if (offset === 0 && size === device.size) return device;
  return {
    size,
    read: (at, length) => {
      if (at < 0 || at + length > size) return Promise.reject(new UnreadableDiskError(`a read at ${at} runs past the partition's end`));
      return device.read(offset + at, length);
    },
  };
}

/** A device over bytes in memory (tests, and anything already whole). */
export function memoryDevice(bytes: Uint8Array): BlockDevice {
  return { size: bytes.byteLength, read: async (offset, length) => bytes.subarray(offset, offset + length) };
}

/**
 * Reads file system blocks through a bounded LRU; a batch of blocks is fetched as contiguous runs,
 * each one device read. `overlay` holds blocks that replace the device's (the journal's committed
 * transactions, journal.ts): the device itself is never written.
 */
export class BlockReader {
  private readonly cache: ByteLru<number>;
  /** Device reads made and bytes read (the benchmark reports them). */
  readonly stats = { reads: 0, bytes: 0 };
  overlay: ReadonlyMap<number, Uint8Array> = new Map();

  constructor(
    readonly device: BlockDevice,
    readonly blockSize: number,
    /** Blocks the file system has: reads beyond are refused (a damaged pointer). */
    public blockCount: number,
    cacheBytes = CACHE_BYTES,
  ) {
    this.cache = new ByteLru(cacheBytes);
  }

  /** One block, as the file system sees it (journal overlay first). */
  async block(n: number): Promise<Uint8Array> {
    return (await this.blocks([n]))[0]!;
  }

  /** The device's block, without the overlay (the journal reads its own log this way). */
  async raw(n: number): Promise<Uint8Array> {
    return (await this.blocks([n], false))[0]!;
  }

  /** Several blocks at once: missing ones are read in contiguous runs, in parallel. */
  async blocks(numbers: readonly number[], withOverlay = true): Promise<Uint8Array[]> {
    const missing: number[] = [];
    const have = new Map<number, Uint8Array>();
    for (const n of numbers) {
      check(Number.isSafeInteger(n) && n >= 0 && n < this.blockCount, `block ${n} is outside the file system (a damaged pointer)`);
      const replaced = withOverlay ? this.overlay.get(n) : undefined;
      if (replaced) {
        have.set(n, replaced);
        continue;
      }
      const cached = this.cache.get(n);
      if (cached) have.set(n, cached);
      else missing.push(n);
    }
    if (missing.length > 0) {
      const sorted = [...new Set(missing)].sort((a, b) => a - b);
      const maxRun = Math.max(1, Math.floor(MAX_RUN_BYTES / this.blockSize));
      const runs: [number, number][] = [];
      for (const n of sorted) {
        const last = runs.at(-1);
        if (last && last[0] + last[1] === n && last[1] < maxRun) last[1]++;
        else runs.push([n, 1]);
      }
      await Promise.all(
        runs.map(async ([first, count]) => {
          const offset = first * this.blockSize;
          const length = count * this.blockSize;
          check(offset + length <= this.device.size, `block ${first + count - 1} is past the end of the disk`);
          const bytes = await this.device.read(offset, length);
          check(bytes.byteLength === length, "the disk returned a short read");
          this.stats.reads++;
          this.stats.bytes += length;
          for (let i = 0; i < count; i++) {
            // Copies: a view would keep the whole run in memory behind the cache's back.
            const block = bytes.slice(i * this.blockSize, (i + 1) * this.blockSize);
            have.set(first + i, block);
            this.cache.set(first + i, block);
          }
        }),
      );
    }
    return numbers.map((n) => have.get(n)!);
  }

  /** `count` contiguous blocks as one array. */
  async run(first: number, count: number): Promise<Uint8Array> {
    const list = Array.from({ length: count }, (_, i) => first + i);
    const parts = await this.blocks(list);
    const out = new Uint8Array(count * this.blockSize);
    parts.forEach((p, i) => out.set(p, i * this.blockSize));
    return out;
  }
}
