/**
 * The image cache: the repository chunks kept in this browser (copy-on-read). Unlike a machine's
 * own writes they can be fetched again, so they are evicted, least recently used first, when they
 * exceed the person's budget or the browser's storage runs short. A chunk that only this browser
 * has (an imported image, a URL image's pinned blocks, a snapshot opened from a `.sandglass`
 * file) is never evicted: see store-format.ts, "Thinning", for the rule.
 */
import { chunkHash, referencedChunks } from "./repo-format.ts";
import type { LocalStore } from "./local-store.ts";
import { LOCAL_REPO, SETTINGS, type ManifestRecord } from "./store-format.ts";

/** A chunk no manifest names yet is kept this long (an import writes its manifest last). */
export const EVICTION_GRACE_MS = 10 * 60 * 1000;
/** How often read times are written back (a chunk's `used` is refreshed at most this often). */
const TOUCH_EVERY_MS = 60 * 1000;
/** Storage use (of the browser's quota) above which evictable chunks go, and down to what. */
const PRESSURE_HIGH = 0.9;
const PRESSURE_LOW = 0.8;
/** New chunk bytes between two checks of the budget (see stored()). */
const STORED_CHECK_BYTES = 8 * 1024 * 1024;

export interface ImageCacheUsage {
  /** Every chunk stored, and those that may be evicted (fetchable again, not in use lately). */
  bytes: number;
  chunks: number;
  evictableBytes: number;
  /** What only this browser has (never evicted). */
  localOnlyBytes: number;
  /** The person's budget, 0 for none. */
  budgetBytes: number;
}

export interface Eviction {
  chunks: number;
  bytes: number;
}

/** True when the manifest came from a repository that can serve its chunks again. */
export function isFetchable(record: ManifestRecord): boolean {
  if (record.url.startsWith(LOCAL_REPO) || record.remote) return false;
  if (record.origin) return record.origin === "network";
  // Stores before version 6 did not say: an image of a repository was fetched; a snapshot may
  // have come from a file, so it is kept.
  return record.manifest.kind === "image";
}

export class ImageCache {
  /** Hashes read since the last write-back of read times. */
  private readonly touched = new Set<string>();
  private touchTimer: ReturnType<typeof setTimeout> | undefined;
  private evicting: Promise<Eviction> | undefined;
  private storedSinceCheck = 0;

  constructor(
    private readonly store: Promise<LocalStore>,
    /** Storage use and quota of this origin (navigator.storage.estimate), if the platform has it. */
    private readonly estimate: () => Promise<{ usage?: number; quota?: number } | undefined> = async () => undefined,
  ) {}

  /**
   * Notes that chunks were stored: every STORED_CHECK_BYTES the budget and the browser's storage
   * are checked (a check reads every chunk's record, so not after each one).
   */
  stored(bytes: number): void {
    this.storedSinceCheck += bytes;
    if (this.storedSinceCheck < STORED_CHECK_BYTES) return;
    this.storedSinceCheck = 0;
    void this.enforce().catch(() => undefined);
  }

  /** Notes that a chunk was read (its read time is stored later, in a batch). */
  used(hash: string): void {
    this.touched.add(hash);
    this.touchTimer ??= setTimeout(() => void this.writeBack(), TOUCH_EVERY_MS);
  }

  /** Stores the read times noted so far. */
  async writeBack(): Promise<void> {
    clearTimeout(this.touchTimer);
    this.touchTimer = undefined;
    if (!this.touched.size) return;
    const hashes = [...this.touched];
    this.touched.clear();
    await (await this.store).touchChunks(hashes, Date.now()).catch(() => undefined);
  }

  async budget(): Promise<number> {
    return (await (await this.store).getSetting<number>(SETTINGS.imageCacheBytes)) ?? 0;
  }

  async setBudget(bytes: number): Promise<void> {
    if (!Number.isFinite(bytes) || bytes < 0) throw new Error("The image cache's size must be 0 (no limit) or more.");
    await (await this.store).putSetting(SETTINGS.imageCacheBytes, Math.floor(bytes));
    await this.enforce();
  }

  async usage(): Promise<ImageCacheUsage> {
    const { metas, evictable, localOnly } = await this.survey(Date.now());
    let bytes = 0;
    let evictableBytes = 0;
    for (const [hash, meta] of metas) {
      bytes += meta.bytes;
      if (evictable.has(hash)) evictableBytes += meta.bytes;
    }
    let localOnlyBytes = 0;
    for (const hash of localOnly) localOnlyBytes += metas.get(hash)?.bytes ?? 0;
    return { bytes, chunks: metas.size, evictableBytes, localOnlyBytes, budgetBytes: await this.budget() };
  }

  /** Evicts least recently used evictable chunks until `bytes` are freed (Infinity: all of them). */
  evict(bytes: number): Promise<Eviction> {
    const run = (this.evicting ?? Promise.resolve({ chunks: 0, bytes: 0 })).then(() => this.evictNow(bytes));
    this.evicting = run.catch(() => ({ chunks: 0, bytes: 0 }));
    return run;
  }

  /**
   * Brings the cache within the person's budget and the browser's storage out of pressure (above
   * 90 % of the quota: down to 80 %). Called after a chunk is stored and after a checkpoint.
   */
  async enforce(): Promise<Eviction> {
    await this.writeBack();
    const store = await this.store;
    const budget = await this.budget();
    let excess = 0;
    if (budget > 0) {
      const total = [...(await store.chunkMetas()).values()].reduce((n, m) => n + m.bytes, 0);
      excess = Math.max(0, total - budget);
    }
    const estimate = await this.estimate().catch(() => undefined);
    if (estimate?.usage !== undefined && estimate.quota && estimate.usage > PRESSURE_HIGH * estimate.quota) {
      excess = Math.max(excess, estimate.usage - PRESSURE_LOW * estimate.quota);
    }
    return excess > 0 ? this.evict(excess) : { chunks: 0, bytes: 0 };
  }

  /** Every chunk's size and use, and which of them may be evicted now. */
  private async survey(now: number) {
    const store = await this.store;
    const [metas, manifests, pinned] = await Promise.all([store.chunkMetas(), store.listAllManifests(), store.pinnedHashes()]);
    // Named by anything that cannot be fetched again: kept, even if a repository also has it.
    const localOnly = new Set(pinned);
    const fetchable = new Set<string>();
    for (const record of manifests) {
      const into = isFetchable(record) ? fetchable : localOnly;
      for (const ref of referencedChunks(record.manifest)) into.add(chunkHash(ref));
    }
    const evictable = new Set<string>();
    for (const [hash, meta] of metas) {
      if (localOnly.has(hash)) continue;
      // Named by no manifest: garbage (a crash mid-import), or an import still running whose
      // manifest is written last; only the first is evicted.
      if (!fetchable.has(hash) && now - meta.used < EVICTION_GRACE_MS) continue;
      evictable.add(hash);
    }
    return { metas, evictable, localOnly };
  }

  private async evictNow(bytes: number): Promise<Eviction> {
    if (bytes <= 0) return { chunks: 0, bytes: 0 };
    await this.writeBack();
    const { metas, evictable } = await this.survey(Date.now());
    const order = [...evictable].sort((a, b) => metas.get(a)!.used - metas.get(b)!.used);
    const chosen: string[] = [];
    let freed = 0;
    for (const hash of order) {
      if (freed >= bytes) break;
      chosen.push(hash);
      freed += metas.get(hash)!.bytes;
    }
    if (chosen.length) await (await this.store).deleteChunks(chosen);
    return { chunks: chosen.length, bytes: freed };
  }
}
