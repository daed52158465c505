/**
 * v86's disk "buffer" contract (see v86 src/buffer.js) over the disk worker. It only translates:
 * hot reads come from a bounded in-memory chunk cache, misses go to the worker, writes patch the
 * cache and go to the worker (which logs them). No storage or network logic lives here.
 */
import { ByteLru } from "../engine/lru.ts";

/** What the adapter needs from the worker side. */
export interface DiskBackend {
  read(offset: number, length: number): Promise<Uint8Array>;
  /** `data` is the backend's from now on: it may move it to another thread instead of copying. */
  write(offset: number, data: Uint8Array): Promise<void>;
}

export interface AdapterOptions {
  size: number;
  chunkSize: number;
  /** Bytes of disk kept in page memory. */
  cacheBytes?: number;
  /** A read or write failed: the guest does not get the data, the page must say why. */
  onError: (err: unknown) => void;
}

interface RecentWrite {
  id: number;
  offset: number;
  data: Uint8Array;
}

/**
 * Twice the guest's RAM: what the guest wrote and reads back after its own page cache let it go
 * (a big file copied, then read) is still here. The cache is LRU, so a scan larger than it would
 * miss on every chunk.
 */
const DEFAULT_CACHE_BYTES = 128 * 1024 * 1024;

export class V86DiskAdapter {
  byteLength: number;
  onload: ((e: object) => void) | undefined;
  onprogress: ((e: object) => void) | undefined;

  /** Reads answered from page memory vs. sent to the worker (for the status bar and benchmarks). */
  readonly counters = { hits: 0, misses: 0, writes: 0 };

  private readonly chunkSize: number;
  private readonly cache: ByteLru<number>;
  private readonly inflight = new Map<number, Promise<void>>();
  /** Writes issued while reads were in flight: re-applied to those reads' results. */
  private recent: RecentWrite[] = [];
  private writeId = 0;
  /** Where reads spanning several chunks are assembled (see borrowFromCache). */
  private scratch = new Uint8Array(0);
  private readsInFlight = 0;
  /** v86's reads not answered yet, and who waits for there to be none (see whenReadsAnswered). */
  private guestReads = 0;
  private answeredWaiters: (() => void)[] = [];
  /** Bumped when the disk moves to another point: reads started before it are dropped. */
  private generation = 0;

  constructor(
    private readonly backend: DiskBackend,
    private readonly options: AdapterOptions,
  ) {
    this.byteLength = options.size;
    this.chunkSize = options.chunkSize;
    this.cache = new ByteLru(options.cacheBytes ?? DEFAULT_CACHE_BYTES);
  }

  load(): void {
    this.onload?.({});
  }

  get(start: number, len: number, fn: (data: Uint8Array) => void): void {
    const cached = this.borrowFromCache(start, len);
    if (cached) {
      this.counters.hits++;
      fn(cached);
      return;
    }
    this.counters.misses++;
    this.guestReads++;
    const generation = this.generation;
    this.fetchChunks(start, len).then(
      () => {
        if (generation === this.generation) {
          const data = this.borrowFromCache(start, len);
          if (data) fn(data);
          else this.get(start, len, fn); // evicted meanwhile by a huge read: fetch again
        } // else the machine was rewound meanwhile
        this.readAnswered();
      },
      (err: unknown) => {
        if (generation === this.generation) this.options.onError(err);
        this.readAnswered();
      },
    );
  }

  /**
   * Resolves once v86 has no read waiting for an answer (at once if it has none), in the same
   * task as the last answer: the emulator runs no instruction before the caller continues. A
   * machine state taken while a read waits would lose it (v86 keeps no record of the request),
   * and the restored guest would wait for an answer that never comes until its driver gave up
   * (30 s). Resolves false after `timeoutMs` if reads are still waiting (a repository that is down).
   */
  whenReadsAnswered(timeoutMs: number): Promise<boolean> {
    if (this.guestReads === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.answeredWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  private readAnswered(): void {
    if (--this.guestReads > 0) return;
    const waiters = this.answeredWaiters;
    this.answeredWaiters = [];
    for (const w of waiters) w();
  }

  get_and_cache(start: number, len: number, fn: (data: Uint8Array) => void): void {
    this.get(start, len, fn);
  }

  /** Synchronous read: the data when every chunk it spans is in page memory, else undefined. */
  get_from_cache(start: number, len: number): Uint8Array | undefined {
    return this.borrowFromCache(start, len)?.slice();
  }

  /**
   * Like get_from_cache, but the bytes are only good until the next read: a view of the cached
   * chunk, or of a scratch buffer reused by every read. v86 copies what get() gives it before
   * returning (into guest RAM, or its IDE data buffer), as its own in-memory disk hands out views
   * of an array later writes change. A fresh array per read cost ~1 ms per MiB read, most of
   * it the kernel handing out new zeroed pages.
   */
  private borrowFromCache(start: number, len: number): Uint8Array | undefined {
    const first = Math.floor(start / this.chunkSize);
    const last = Math.floor((start + len - 1) / this.chunkSize);
    for (let c = first; c <= last; c++) if (!this.cache.has(c)) return undefined;
    if (first === last) {
      const chunkStart = first * this.chunkSize;
      return this.cache.get(first)!.subarray(start - chunkStart, start - chunkStart + len);
    }
    if (this.scratch.byteLength < len) this.scratch = new Uint8Array(Math.max(len, 2 * this.scratch.byteLength));
    const out = this.scratch.subarray(0, len);
    for (let c = first; c <= last; c++) {
      const chunk = this.cache.get(c)!;
      const chunkStart = c * this.chunkSize;
      const from = Math.max(start, chunkStart);
      const to = Math.min(start + len, chunkStart + chunk.byteLength);
      out.set(chunk.subarray(from - chunkStart, to - chunkStart), from - start);
    }
    return out;
  }

  set(start: number, data: Uint8Array, fn: () => void): void {
    this.counters.writes++;
    const copy = data.slice();
    this.patchCache(start, copy);
    let sent = copy;
    if (this.readsInFlight > 0) {
      this.recent.push({ id: ++this.writeId, offset: start, data: copy });
      sent = copy.slice(); // `copy` stays here: the backend may take what it is given
    } else {
      this.writeId++;
    }
    this.backend.write(start, sent).catch((err: unknown) => this.options.onError(err));
    fn();
    if (data.byteLength >= this.chunkSize) this.completeEdges(start, data.byteLength);
  }

  get_buffer(fn: (buffer?: ArrayBuffer) => void): void {
    fn(undefined);
  }

  /**
   * The disk's data is not in the state (the disk worker keeps it). The shape is that of v86's own
   * lazy HTTP disk with no written blocks, so plain v86 can resume a Sandglass state too.
   */
  get_state(): unknown[] {
    return [[]];
  }

  set_state(_state: unknown[]): void {}

  /** Forgets everything cached and in flight (the disk moved to another point: rewind, reset). */
  invalidate(): void {
    this.generation++;
    this.cache.clear();
    this.inflight.clear();
    this.recent = [];
  }

  // ── internals ───────────────────────────────────────────────────────────────────────────────

  /** Brings every chunk of [start, start+len) into the cache, one worker call per missing run. */
  private async fetchChunks(start: number, len: number): Promise<void> {
    const first = Math.floor(start / this.chunkSize);
    const last = Math.floor((start + len - 1) / this.chunkSize);
    const waits: Promise<void>[] = [];
    let runStart = -1;
    const flushRun = (end: number) => {
      if (runStart < 0) return;
      const load = this.loadRun(runStart, end - runStart);
      for (let c = runStart; c < end; c++) this.inflight.set(c, load);
      waits.push(load);
      runStart = -1;
    };
    for (let c = first; c <= last; c++) {
      const pending = this.inflight.get(c);
      if (this.cache.has(c) || pending) {
        flushRun(c);
        if (pending) waits.push(pending);
      } else if (runStart < 0) {
        runStart = c;
      }
    }
    flushRun(last + 1);
    await Promise.all(waits);
  }

  private async loadRun(firstChunk: number, count: number): Promise<void> {
    const issuedAfter = this.writeId;
    const generation = this.generation;
    this.readsInFlight++;
    const offset = firstChunk * this.chunkSize;
    const length = Math.min(count * this.chunkSize, this.byteLength - offset);
    try {
      const data = await this.backend.read(offset, length);
      if (generation !== this.generation) return;
      for (let i = 0; i < count; i++) {
        const chunk = data.slice(i * this.chunkSize, Math.min((i + 1) * this.chunkSize, data.byteLength));
        this.cache.set(firstChunk + i, chunk);
      }
      // Writes issued after this read left may be missing from its result: apply them again.
      for (const w of this.recent) if (w.id > issuedAfter) this.patchCache(w.offset, w.data);
    } finally {
      if (generation === this.generation) for (let i = 0; i < count; i++) this.inflight.delete(firstChunk + i);
      if (--this.readsInFlight === 0) this.recent = [];
    }
  }

  /**
   * A large write (a file being written) caches the chunks it covers whole; the chunks at its two
   * ends it covers only in part are fetched in the background, so reading the file back later
   * finds all of it in page memory. (The worker answers with this write applied: reads wait for
   * every write issued before them.)
   */
  private completeEdges(start: number, len: number): void {
    const first = Math.floor(start / this.chunkSize);
    const last = Math.floor((start + len - 1) / this.chunkSize);
    for (const c of new Set([first, last])) {
      if (this.cache.has(c) || this.inflight.has(c)) continue;
      this.fetchChunks(c * this.chunkSize, 1).catch(() => undefined); // a real read reports failures
    }
  }

  /**
   * Applies a write to cached chunks. A chunk the write covers whole is cached even if it was not:
   * its content is known, and data just written is often read back soon (a file copied, a build).
   */
  private patchCache(start: number, data: Uint8Array): void {
    const first = Math.floor(start / this.chunkSize);
    const last = Math.floor((start + data.byteLength - 1) / this.chunkSize);
    for (let c = first; c <= last; c++) {
      const chunkStart = c * this.chunkSize;
      const chunkEnd = Math.min(chunkStart + this.chunkSize, this.byteLength);
      const chunk = this.cache.get(c); // a write is a use: it must not be the next eviction
      if (!chunk) {
        if (start <= chunkStart && start + data.byteLength >= chunkEnd) {
          this.cache.set(c, data.slice(chunkStart - start, chunkEnd - start));
        }
        continue;
      }
      const from = Math.max(start, chunkStart);
      const to = Math.min(start + data.byteLength, chunkStart + chunk.byteLength);
      chunk.set(data.subarray(from - start, to - start), from - chunkStart);
    }
  }
}
