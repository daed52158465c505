/**
 * Copy-on-read base disk: a repository image's chunks, served from memory, then IndexedDB, then the
 * network (verified by SHA-256 before anything is stored or shown to the guest).
 */
import { ByteLru } from "./lru.ts";
import { isZeroBlock as isAllZero, type LocalStore } from "./local-store.ts";
import {
  chunkHash,
  chunkLength,
  chunkPath,
  isCompressed,
  manifestPath,
  parseManifest,
  type DiskManifest,
} from "./repo-format.ts";
import { LOCAL_REPO, type MachineSource } from "./store-format.ts";
import { gunzip } from "./gzip.ts";
import type { RemoteBlocks, RemoteIdentity } from "./remote-image.ts";
import type { ImageCache } from "./image-cache.ts";
import { sha256Hex, sleep } from "./util.ts";

/** Chunks kept decoded in the worker's memory, so read-modify-write and re-reads skip IndexedDB. */
const MEMORY_BUDGET = 32 * 1024 * 1024;
/** How many neighbouring chunks of a URL image fetchAll asks for in one Range request (1 MiB of 64 KiB chunks). */
const FETCH_ALL_RUN = 16;
/** How many chunks ahead a sequential reader is prefetched. */
const PREFETCH_AHEAD = 8;
/**
 * How long a chunk's fetch keeps retrying a repository that is down (backoff doubling from half
 * a second to RETRY_MAX_MS) before the machine stops with an error: Wi-Fi that comes back or a
 * server restart resumes the guest without a reload; a repository gone for good does not hang it.
 */
export const OUTAGE_PATIENCE_MS = 45_000;
const RETRY_MAX_MS = 8_000;
/** Attempts for an answer that will not change by waiting (a missing chunk, a corrupt copy). */
const DEFINITE_ATTEMPTS = 3;
/** A request pending this long shows in the page as waited for. */
const SLOW_AFTER_MS = 1_000;
/**
 * The manifest's metadata chunks are fetched in the background (fetchMetadata) once the machine
 * has run this long and the guest has fetched nothing for METADATA_QUIET_MS: a first visit's
 * answer and a boot's own reads come first.
 */
export const METADATA_START_MS = 8_000;
const METADATA_QUIET_MS = 1_000;
/** Background metadata fetches at once: the guest's own reads keep the other connections. */
const METADATA_CONCURRENCY = 3;

/** The repository served bytes that do not hash to the chunk's name. */
export class IntegrityError extends Error {
  constructor(
    readonly what: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(
      `${what[0]!.toUpperCase()}${what.slice(1)} failed verification: expected SHA-256 ${expected.slice(0, 12)}…, ` +
        `got ${actual.slice(0, 12)}…. The repository's copy is corrupt; it was refused and never reached the guest.`,
    );
    this.name = "IntegrityError";
  }
}

/** The repository could not be reached or answered with an error. */
export class RepositoryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RepositoryError";
  }
}

/** Counters the page shows while blocks stream in. */
export interface TransferStats {
  networkChunks: number;
  /** Bytes as sent on the wire (compressed where the repository compressed them). */
  networkBytes: number;
  cacheChunks: number;
  cacheBytes: number;
  zeroChunks: number;
  /** A URL image's size, and its bytes not fetched from the server yet (absent for other images). */
  remoteBytes?: number;
  remoteUnreadBytes?: number;
  /** What the disk waits for from the repository, when it has waited a while or is retrying. */
  waiting?: RepositoryWait | null;
  /**
   * The file system's metadata being fetched in the background (fetchMetadata): chunks it had to
   * fetch, and how many have arrived. `stopped` when it gave up (the repository failed once;
   * the guest's own reads still fetch what they need).
   */
  metadata?: { chunks: number; fetched: number; stopped?: boolean };
}

/** A request the machine waits for: slow, or failed and about to be retried. */
export interface RepositoryWait {
  what: string;
  /** When the first attempt started (ms since the epoch). */
  since: number;
  /** Failed attempts so far (0: slow, not failed). */
  failures: number;
  /** When the next attempt starts, while retrying. */
  retryAt?: number;
  /** Why the last attempt failed. */
  reason?: string;
}

export type Fetch = (input: string, init?: RequestInit) => Promise<Response>;

/** The manifest URL of a machine's source inside its repository. */
export function manifestUrl(source: MachineSource): string {
  return new URL(manifestPath(source.kind, source.name), source.repo).href;
}

/**
 * Loads a manifest: the network's copy when reachable (and remembered), else the last good copy,
 * so a machine whose chunks are all local opens offline.
 */
export async function loadManifest(
  storage: LocalStore | Promise<LocalStore>,
  source: MachineSource,
  fetchFn: Fetch,
): Promise<DiskManifest> {
  const url = manifestUrl(source);
  // The request need not wait for IndexedDB to open (the store is only the fallback and the copy).
  const store = { getManifest: async (u: string) => (await storage).getManifest(u) };
  if (source.repo === LOCAL_REPO) {
    // An image imported in this browser: nowhere else to get it from.
    const kept = await store.getManifest(url);
    if (kept) return kept.manifest;
    throw new RepositoryError(`The image "${source.name}" was imported in this browser, and its data is no longer in this browser's storage. Import the file again.`);
  }
  let response: Response;
  try {
    response = await fetchFn(url, { cache: "no-cache" });
  } catch (err) {
    const cached = await store.getManifest(url);
    if (cached) return cached.manifest;
    throw new RepositoryError(`Could not reach the image repository for ${source.kind} "${source.name}" (${String(err)}).`);
  }
  if (response.status === 404 || response.status === 403) {
    // An imported snapshot is known here even if its repository never had it.
    const cached = await store.getManifest(url);
    if (cached) return cached.manifest;
    // A bucket that does not let everyone list it answers 403, not 404, for a key it lacks.
    const why = response.status === 403 ? " (it answered HTTP 403: a bucket says that for a name it does not have, or access is denied)" : "";
    throw new RepositoryError(`No ${source.kind} named "${source.name}" in the repository ${source.repo}${why}.`);
  }
  if (!response.ok) {
    const cached = await store.getManifest(url);
    if (cached) return cached.manifest;
    throw new RepositoryError(`The repository answered HTTP ${response.status} for ${source.kind} "${source.name}".`);
  }
  let json: unknown;
  try {
    json = await response.json();
  } catch {
    throw new RepositoryError(`The manifest of ${source.kind} "${source.name}" is not valid JSON (truncated or corrupt).`);
  }
  const manifest = parseManifest(json);
  if (manifest.kind !== source.kind || manifest.name !== source.name) {
    throw new RepositoryError(`The manifest at ${url} describes ${manifest.kind} "${manifest.name}", not ${source.kind} "${source.name}".`);
  }
  // Kept for opening offline; a 2 GiB disk's manifest is ~1 MB, so opening does not wait for it.
  Promise.resolve(storage)
    .then((store) => store.putManifest({ url, manifest, fetched: Date.now(), origin: "network" }))
    .catch(() => undefined);
  return manifest;
}

/** An image read from a URL (remote-image.ts): where its chunks come from, and those pinned so far. */
export interface RemoteChunks {
  blocks: RemoteBlocks;
  /** Chunk index → SHA-256 hex (null: all zeros), as pinned in IndexedDB. */
  pins: Map<number, string | null>;
  /** The image's manifest URL, under which its pins are kept. */
  key: string;
}

export class ChunkSource {
  readonly stats: TransferStats = { networkChunks: 0, networkBytes: 0, cacheChunks: 0, cacheBytes: 0, zeroChunks: 0 };
  /** The image's chunks; a URL image's fill in as they are first fetched (see `known`). */
  readonly manifest: DiskManifest;
  private readonly memory = new ByteLru<string>(MEMORY_BUDGET);
  private readonly inflight = new Map<string, Promise<Uint8Array>>();
  private readonly zero: Uint8Array;
  /** A URL image's chunks whose content is pinned (the others are not known yet, not zeros). */
  private readonly known: Uint8Array | null = null;
  private lastRead = -2;
  /** Whether the guest's last read chunk came from the network in this session (see get()). */
  private lastReadFetched = true;
  /** Hashes of the chunks fetched from the network for this disk (for the guest or ahead of it). */
  private readonly fetchedHere = new Set<string>();
  /** When a fetch for the guest last started or ended (performance.now()). */
  private lastGuestFetch = 0;
  private verifying: Promise<void> | undefined;
  /** The image cache's bookkeeping (use times, budget): set for repository images. */
  cache: ImageCache | undefined;
  /** How long a fetch waits out a repository that is down (the person's setting, else the default). */
  patienceMs = OUTAGE_PATIENCE_MS;

  constructor(
    manifest: DiskManifest,
    private readonly repoBase: string,
    private readonly store: LocalStore,
    private readonly fetchFn: Fetch,
    private readonly remoteChunks?: RemoteChunks,
  ) {
    this.zero = new Uint8Array(manifest.chunkSize);
    this.manifest = manifest;
    if (remoteChunks) {
      this.manifest = { ...manifest, chunks: [...manifest.chunks] };
      this.known = new Uint8Array(manifest.chunks.length);
      // Past the file (an empty second disk): zeros, known.
      this.known.fill(1, Math.ceil(remoteChunks.blocks.identity.size / manifest.chunkSize));
      for (const [index, hash] of remoteChunks.pins) {
        if (index >= this.known.length) continue;
        this.known[index] = 1;
        this.manifest.chunks[index] = hash;
      }
      this.stats.remoteBytes = remoteChunks.blocks.identity.size;
      this.stats.remoteUnreadBytes = 0;
      this.known.forEach((k, i) => (this.stats.remoteUnreadBytes! += k ? 0 : this.remoteLength(i)));
    }
  }

  /** Bytes of chunk `index` that come from a URL image's file (its last chunk may be short). */
  private remoteLength(index: number): number {
    return Math.min(chunkLength(this.manifest, index), this.remoteChunks!.blocks.identity.size - index * this.manifest.chunkSize);
  }

  /** The URL image's pinned identity (null for repository and imported images). */
  get remote(): RemoteIdentity | null {
    return this.remoteChunks?.blocks.identity ?? null;
  }

  /** Chunks not fetched yet (a URL image's; 0 for any other). */
  get unknownChunks(): number {
    return this.known ? this.known.length - this.known.reduce((n, k) => n + k, 0) : 0;
  }

  /**
   * Fetches and pins every chunk of a URL image not read yet (a snapshot of it lists the whole
   * disk): runs of up to FETCH_ALL_RUN neighbours in one Range request, four requests at a time.
   * Nothing to do for other images.
   */
  async fetchAll(): Promise<void> {
    const known = this.known;
    if (!known) return;
    const runs: number[][] = [];
    for (let i = 0; i < known.length; i++) {
      if (known[i]) continue;
      const run = runs.at(-1);
      if (run && run.at(-1) === i - 1 && run.length < FETCH_ALL_RUN) run.push(i);
      else runs.push([i]);
    }
    let next = 0;
    const worker = async () => {
      while (next < runs.length) await this.loadRemoteRun(runs[next++]!);
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  /**
   * Checks that a URL image is still the file it was pinned as: one pinned chunk fetched again
   * must hash the same (a server that sends no validators cannot hide a change). Offline is no
   * failure (what is here still works); a change is, and refuses every later fetch.
   */
  verifyRemote(): Promise<void> {
    // Chunks not pinned yet are fetched only after it: without validators, only this tells.
    this.verifying ??= this.verifyPins();
    return this.verifying;
  }

  private async verifyPins(): Promise<void> {
    const remote = this.remoteChunks;
    if (!remote || remote.pins.size === 0) return;
    const [index, hash] = [...remote.pins].find(([, h]) => h !== null) ?? [...remote.pins][0]!;
    let data: Uint8Array;
    try {
      data = await this.fetchRemote(index);
    } catch (err) {
      if (err instanceof Error && err.name === "RemoteChangedError") throw err;
      return;
    }
    const actual = isAllZero(data) ? null : await sha256Hex(data);
    if (actual !== hash) throw remote.blocks.refuse(`block ${index}, read before, has other content now`);
  }

  /** The repository this disk's chunks come from. */
  get repoUrl(): string {
    return this.repoBase;
  }

  get chunkSize(): number {
    return this.manifest.chunkSize;
  }

  get chunkCount(): number {
    return this.manifest.chunks.length;
  }

  /**
   * Chunk `index`'s content (read-only: callers copy before changing it). Sequential callers get
   * the next chunks prefetched in the background; `sequential: false` is for readers that jump
   * around and ask for what they need at once (the file browser and diff, ext4/): no prefetch,
   * and the guest's sequential stream is left undisturbed.
   */
  async get(index: number, sequential = true): Promise<Uint8Array> {
    if (!sequential) return this.load(index, false);
    // From the network only ahead of a reader of data that came from there: a run of chunks that
    // were here already (the file system's metadata, fetched in the background) reads on without
    // fetching their neighbours, which it seldom wants (measured: 485 wasted fetches in one
    // `find /`); what of them is stored here is still read ahead.
    if (index === this.lastRead + 1) this.prefetch(index + 1, PREFETCH_AHEAD, this.lastReadFetched);
    this.lastRead = index;
    const data = await this.load(index);
    const ref = this.manifest.chunks[index];
    this.lastReadFetched = this.known !== null || !ref || this.fetchedHere.has(chunkHash(ref));
    return data;
  }

  /**
   * Starts loading chunks [from, from+count) that are not in memory, from IndexedDB or else the
   * network (`fromNetwork: false`: those stored here only); never throws.
   */
  prefetch(from: number, count: number, fromNetwork = true): void {
    const end = Math.min(from + count, this.chunkCount);
    for (let i = from; i < end; i++) {
      const ref = this.manifest.chunks[i];
      const unknown = this.known !== null && !this.known[i];
      if (unknown || (fromNetwork && ref && !this.memory.has(chunkHash(ref)))) this.load(i).catch(() => undefined);
      else if (ref && !this.memory.has(chunkHash(ref))) void this.loadStored(ref);
    }
  }

  /** A chunk into memory if IndexedDB has it (read ahead of the guest; nothing if not). */
  private async loadStored(ref: string): Promise<void> {
    const hash = chunkHash(ref);
    if (!this.inflight.has(hash)) await this.fromStore(hash).catch(() => undefined);
  }

  /** A chunk from IndexedDB into memory, counted as read from the cache; undefined if not there. */
  private async fromStore(hash: string): Promise<Uint8Array | undefined> {
    const local = await this.store.getChunk(hash);
    if (!local) return undefined;
    this.cache?.used(hash);
    this.stats.cacheChunks++;
    this.stats.cacheBytes += local.byteLength;
    this.memory.set(hash, local);
    return local;
  }

  /** `waitForStore`: see getRef. */
  private load(index: number, waitForStore = true): Promise<Uint8Array> {
    const ref = this.manifest.chunks[index];
    if (ref === undefined) throw new RangeError(`chunk ${index} is outside the disk`);
    if (this.known && !this.known[index]) return this.loadRemote(index);
    if (ref === null) {
      this.stats.zeroChunks++;
      const length = chunkLength(this.manifest, index);
      return Promise.resolve(length === this.zero.length ? this.zero : this.zero.subarray(0, length));
    }
    return this.getRef(ref, chunkLength(this.manifest, index), `disk chunk ${index}`, true, waitForStore);
  }

  /**
   * Any chunk file of the repository by ref (disk chunks, machine state pieces): memory, then
   * IndexedDB, then the network, verified. `length` is checked when known. `keep: false` is for
   * data used once (a snapshot's machine state, which becomes a checkpoint): not cached here.
   * `waitForStore: false` answers as soon as a fetched chunk is verified (and in memory), its
   * IndexedDB write going on behind: for the file browser and diff, whose reads follow one another
   * (a write to IndexedDB took 1–225 ms on a busy machine); the guest's reads wait for it.
   */
  getRef(ref: string, length: number | null, what: string, keep = true, waitForStore = true): Promise<Uint8Array> {
    const hash = chunkHash(ref);
    const hot = this.memory.get(hash);
    if (hot) return Promise.resolve(hot);
    // Concurrent readers of one chunk (or of two chunks with equal content) share one load.
    let pending = this.inflight.get(hash);
    if (!pending) {
      pending = this.loadCold(ref, hash, length, what, keep, waitForStore).finally(() => this.inflight.delete(hash));
      this.inflight.set(hash, pending);
    }
    return pending;
  }

  private async loadCold(ref: string, hash: string, length: number | null, what: string, keep: boolean, waitForStore: boolean): Promise<Uint8Array> {
    const local = await this.fromStore(hash);
    if (local) return local;
    if (this.repoBase === LOCAL_REPO) {
      throw new RepositoryError(`Part of this imported image (${what}) is missing from this browser's storage (site data cleared?). Import the file again.`);
    }
    const data = await this.fetchVerified(ref, hash, length, what);
    if (!keep) return data;
    this.fetchedHere.add(hash);
    this.memory.set(hash, data);
    // A full quota must not stop the guest: the chunk is still served from memory.
    const stored = this.store.putChunk(hash, data).then(
      () => this.cache?.stored(data.byteLength),
      () => undefined,
    );
    if (waitForStore) await stored;
    return data;
  }

  /** Chunk `index` of a URL image from its server; its short last chunk zero-padded when a second disk follows. */
  private async fetchRemote(index: number): Promise<Uint8Array> {
    const data = await this.remoteChunks!.blocks.fetchChunk(index, this.remoteLength(index));
    return this.padded(index, data);
  }

  /** A URL image's chunk as the disk has it: the file's short last chunk zero-padded to its length in the disk. */
  private padded(index: number, data: Uint8Array): Uint8Array {
    const length = chunkLength(this.manifest, index);
    if (data.byteLength === length) return data;
    const padded = new Uint8Array(length);
    padded.set(data);
    return padded;
  }

  /** A URL image's chunk read for the first time: fetched by Range, hashed, pinned, stored. */
  private loadRemote(index: number): Promise<Uint8Array> {
    const key = `#${index}`;
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = (async () => {
        await this.verifying?.catch(() => undefined); // a change makes fetchChunk refuse
        const [data] = await this.pinFetched([{ index, data: await this.fetchRemote(index) }]);
        return data!;
      })().finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  /**
   * Neighbouring chunks of a URL image read for the first time, in one Range request (fetchAll),
   * then pinned as loadRemote pins one. Those read meanwhile are left to that read.
   */
  private async loadRemoteRun(indices: readonly number[]): Promise<void> {
    const todo = indices.filter((i) => !this.known![i] && !this.inflight.has(`#${i}`));
    // A gap (a chunk the guest is reading now) splits the run: the rest one at a time.
    if (todo.length !== indices.length) {
      for (const i of todo) await this.loadRemote(i);
      return;
    }
    const lengths = todo.map((i) => this.remoteLength(i));
    const run = (async () => {
      await this.verifying?.catch(() => undefined);
      const bytes = await this.remoteChunks!.blocks.fetchBytes(todo[0]! * this.manifest.chunkSize, lengths.reduce((a, b) => a + b, 0));
      let at = 0;
      // Copies, not views: IndexedDB would store each view's whole buffer.
      const chunks = todo.map((index, k) => ({ index, data: this.padded(index, bytes.slice(at, (at += lengths[k]!))) }));
      return this.pinFetched(chunks);
    })();
    // Each chunk is in flight on its own, so a guest read of one of them shares this request.
    const each = todo.map((index, k) => {
      const key = `#${index}`;
      const pending = run.then((all) => all[k]!).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
      return pending;
    });
    await Promise.all(each);
  }

  /** Hashes, pins and stores chunks just fetched from a URL image (one transaction); returns what the disk reads. */
  private async pinFetched(chunks: readonly { index: number; data: Uint8Array }[]): Promise<Uint8Array[]> {
    const remote = this.remoteChunks!;
    const hashed = await Promise.all(chunks.map(async ({ index, data }) => ({ index, data, hash: isAllZero(data) ? null : await sha256Hex(data) })));
    // A full quota must not stop the guest: the chunks are still served from memory (and fetched
    // and pinned again next time).
    await this.store.pinChunks(remote.key, hashed.map(({ index, hash, data }) => ({ index, hash, data: hash ? data : null }))).catch(() => undefined);
    return hashed.map(({ index, data, hash }) => {
      this.stats.networkChunks++;
      this.stats.networkBytes += data.byteLength;
      remote.pins.set(index, hash);
      this.manifest.chunks[index] = hash;
      this.known![index] = 1;
      this.stats.remoteUnreadBytes! -= this.remoteLength(index);
      if (!hash) return this.zero.subarray(0, data.byteLength);
      this.memory.set(hash, data);
      return data;
    });
  }

  /**
   * Fetches the manifest's `metadataChunks` that are not here yet, METADATA_CONCURRENCY at a time,
   * once the machine has run METADATA_START_MS and the guest's reads are quiet: then a first
   * `find /`, `ls -R` or `apt` reads directories from this browser instead of waiting on one
   * fetch per directory. A hint only: one failed request stops it, silently (an outage is the
   * guest's reads' to report). Fetched chunks go to IndexedDB, not to the memory cache the guest's
   * reads use. Ends early when `signal` aborts (the machine closed).
   */
  async fetchMetadata(signal: AbortSignal, startAfterMs = METADATA_START_MS): Promise<void> {
    const list = this.manifest.metadataChunks ?? [];
    if (list.length === 0 || this.repoBase === LOCAL_REPO || this.known) return;
    await sleep(startAfterMs);
    while (!signal.aborted && (this.inflight.size > 0 || performance.now() - this.lastGuestFetch < METADATA_QUIET_MS)) await sleep(250);
    const refs = [...new Map(list.map((i) => [chunkHash(this.manifest.chunks[i]!), { ref: this.manifest.chunks[i]!, index: i }])).values()]
      .filter(({ ref }) => !this.memory.has(chunkHash(ref)));
    const missing: typeof refs = [];
    for (let at = 0; at < refs.length && !signal.aborted; at += 512) {
      const batch = refs.slice(at, at + 512);
      const here = await this.store.hasChunks(batch.map(({ ref }) => chunkHash(ref)));
      batch.forEach((r, i) => here[i] || missing.push(r));
    }
    const progress: NonNullable<TransferStats["metadata"]> = { chunks: missing.length, fetched: 0 };
    this.stats.metadata = progress;
    let next = 0;
    const worker = async () => {
      while (next < missing.length && !signal.aborted && !progress.stopped) {
        const { ref, index } = missing[next++]!;
        const hash = chunkHash(ref);
        const url = new URL(chunkPath(ref), this.repoBase).href;
        const got = await this.fetchAttempt(url, ref, hash, chunkLength(this.manifest, index), `disk chunk ${index}`, false);
        if (!("data" in got)) {
          progress.stopped = true;
          return;
        }
        // The guest may have read it meanwhile (then it is stored already).
        if (!this.memory.has(hash)) {
          await this.store.putChunk(hash, got.data).then(
            () => this.cache?.stored(got.data.byteLength),
            () => (progress.stopped = true), // a full quota: the guest's reads come first
          );
        }
        progress.fetched++;
      }
    };
    await Promise.all(Array.from({ length: METADATA_CONCURRENCY }, worker));
  }

  /** Requests in flight and retrying, oldest first: the page shows the oldest one waited for. */
  private readonly waits = new Set<RepositoryWait>();

  /** The request the machine has waited for longest, if it is slow or retrying (see TransferStats). */
  private refreshWaiting(): void {
    const now = Date.now();
    let shown: RepositoryWait | null = null;
    for (const w of this.waits) {
      if (w.failures === 0 && now - w.since < SLOW_AFTER_MS) continue;
      if (!shown || w.since < shown.since) shown = w;
    }
    this.stats.waiting = shown ? { ...shown } : null;
  }

  private async fetchVerified(ref: string, hash: string, length: number | null, what: string): Promise<Uint8Array> {
    const wait: RepositoryWait = { what, since: Date.now(), failures: 0 };
    this.waits.add(wait);
    this.lastGuestFetch = performance.now();
    // The counters are read on a timer: a slow request shows once it is slow, with no event.
    const slow = setInterval(() => this.refreshWaiting(), SLOW_AFTER_MS / 2);
    try {
      return await this.fetchWithRetries(ref, hash, length, what, wait);
    } finally {
      this.lastGuestFetch = performance.now();
      clearInterval(slow);
      this.waits.delete(wait);
      this.refreshWaiting();
    }
  }

  private async fetchWithRetries(ref: string, hash: string, length: number | null, what: string, wait: RepositoryWait): Promise<Uint8Array> {
    const url = new URL(chunkPath(ref), this.repoBase).href;
    let lastError: unknown;
    /** The last failure, in a few words (for the page's waiting line). */
    let cause = "";
    let definite = 0;
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) {
        // Network failures and server errors wait out an outage; a definite answer (404, a bad
        // copy) is asked again a few times only.
        const delay = Math.min(RETRY_MAX_MS, 500 * 2 ** (attempt - 1));
        if (definite >= DEFINITE_ATTEMPTS || Date.now() + delay - wait.since > this.patienceMs) {
          if (definite >= DEFINITE_ATTEMPTS) throw lastError;
          const seconds = Math.round((Date.now() - wait.since) / 1000);
          throw new RepositoryError(
            `The image repository could not be reached for ${seconds} s while fetching ${what} (${wait.reason ?? "no answer"}). ` +
              "The machine is stopped and nothing it saved is lost; reload the page once the repository is back.",
          );
        }
        wait.failures = attempt;
        wait.retryAt = Date.now() + delay;
        wait.reason = cause;
        this.refreshWaiting();
        await sleep(delay);
        delete wait.retryAt;
      }
      const got = await this.fetchAttempt(url, ref, hash, length, what, attempt > 0);
      if ("data" in got) return got.data;
      lastError = got.error;
      cause = got.cause;
      if (got.definite) definite++;
    }
  }

  /**
   * One request for a chunk file, verified. A failure says why, and whether it is definite (a
   * missing file, a corrupt copy: waiting will not change it) or may pass (the network, a server
   * error). `retry`: after a failure, bypass any HTTP cache that may hold a bad copy, and ask for
   * the file as stored (a corrupt gzip file sent as Content-Encoding only shows as a network error).
   */
  private async fetchAttempt(
    url: string,
    ref: string,
    hash: string,
    length: number | null,
    what: string,
    retry: boolean,
  ): Promise<{ data: Uint8Array } | { error: Error; cause: string; definite: boolean }> {
    let body: Uint8Array;
    let inflated: boolean;
    let wireBytes: number;
    try {
      const response = await this.fetchFn(retry && isCompressed(ref) ? `${url}?encoding=identity` : url, retry ? { cache: "reload" } : {});
      if (!response.ok) {
        const definite = response.status === 404 || response.status === 410 || response.status === 403;
        return { error: new RepositoryError(`The repository answered HTTP ${response.status} for ${what}.`), cause: `HTTP ${response.status}`, definite };
      }
      body = new Uint8Array(await response.arrayBuffer());
      // A ".gz" file sent with Content-Encoding: gzip reaches us already inflated by the browser.
      inflated = /\bgzip\b/.test(response.headers.get("content-encoding") ?? "");
      wireBytes = Number(response.headers.get("content-length")) || body.byteLength;
    } catch (err) {
      return {
        error: new RepositoryError(`Network error while fetching ${what}: ${String(err)}`),
        cause: err instanceof Error ? err.message : String(err),
        definite: false,
      };
    }
    this.stats.networkChunks++;
    this.stats.networkBytes += wireBytes;
    let data = body;
    if (isCompressed(ref) && !inflated) {
      try {
        data = gunzip(body);
      } catch {
        // Not gzip: a host that inflated it without saying so (a cross-origin response hides
        // Content-Encoding), or a bad copy. The hash decides.
      }
    }
    const actual = await sha256Hex(data);
    if (actual === hash && (length === null || data.byteLength === length)) return { data };
    return { error: new IntegrityError(what, hash, actual), cause: "corrupt copy", definite: true };
  }
}
