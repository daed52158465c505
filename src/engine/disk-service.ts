/**
 * What the disk worker offers the page: open a machine, read and write its disk, checkpoint and
 * rewind it, list its timeline, manage machines. Plain TypeScript; workers/disk.worker.ts only
 * exposes an instance of it through Comlink.
 */
import { ChunkSource, OUTAGE_PATIENCE_MS, loadManifest, manifestUrl, type Fetch, type TransferStats } from "./chunk-source.ts";
import { decodeBundlePoints, encodeBundle, type PointLabel } from "./bundle.ts";
import { CHECKPOINT_FORMAT, joinState } from "./checkpoint-format.ts";
import {
  LEGACY_HARDWARE,
  chunkHash,
  drivesOf,
  hardwareOf,
  referencedChunks,
  type DiskManifest,
  type Hardware,
  type MachineStateRef,
  type SourceRef,
} from "./repo-format.ts";
import { buildSnapshot, missingChunks, storeForm, uploadSnapshot, type SnapshotFiles, type UploadResult } from "./snapshot.ts";
import { Checkpoints, type SaveOptions } from "./checkpoints.ts";
import { Disk } from "./disk.ts";
import type { DetectedImage } from "./image-detect.ts";
import {
  fileImage,
  forgetOwnImage,
  importImage,
  importUrl,
  inspectImage,
  inspectUrl,
  type DetectedUrl,
  type ImportProgress,
  type ImportSettings,
} from "./image-import.ts";
import { RemoteBlocks, urlFileName } from "./remote-image.ts";
import { isQuotaError, LocalStore } from "./local-store.ts";
import { sleep } from "./util.ts";
import {
  LOCAL_REPO,
  SETTINGS,
  type InputSettings,
  type BranchRecord,
  type CheckpointRecord,
  type MachineRecord,
  type MachineSource,
  type MarkerRecord,
  type Point,
  type RetentionSetting,
} from "./store-format.ts";
import { ImageCache, type Eviction, type ImageCacheUsage } from "./image-cache.ts";
import { checkRule, DEFAULT_RULE, planThinning } from "./retention.ts";
import { INDEX_RECORD_BYTES, sweepHistory, type SweepResult } from "./history-sweep.ts";
import { ancestry } from "./timeline.ts";
import { bundleHistory, FilesAtPoints, type FilesDiff, type FilesListing, type FilesPoint, type FilesTextDiff } from "./point-files.ts";
import type { FileStat, PointInfo } from "./ext4/files.ts";

/** Which machine to open: the given id, else the last opened machine of that source, else a new one. */
export type OpenRequest =
  | { machineId: string }
  /** `fresh`: start a new machine even if one exists for this source. */
  | (MachineSource & { fresh?: boolean });

/** What the page needs to know about the opened machine. */
export interface MachineInfo {
  id: string;
  name: string;
  source: MachineSource;
  size: number;
  chunkSize: number;
  description: string;
  now: Point;
  /** Newest checkpoint at or before "now" on its branch, else the one it forked from: a reload resumes there. */
  resume: CheckpointSummary | null;
  /** The emulated machine its disk and states belong to (RAM, network card, shared folder). */
  hardware: Hardware;
  /** Whether keys and the mouse on the screen reach the guest. */
  input: InputSettings;
  /** The repository image at the root of the machine's source (for "new machine from this image"). */
  image: string | null;
  /** Where the disk is read from when it is an image opened from a URL. */
  remoteUrl: string | null;
}

/**
 * A checkpoint as the timeline shows it (no piece list). `pending`: usable now but not stored yet
 * (a shared snapshot's state, written in the background); a crash meanwhile loses it.
 */
export type CheckpointSummary = Omit<CheckpointRecord, "refs" | "pieceCount"> & { pending?: true };

/** What one machine keeps in this browser (the storage panel). */
export interface MachineUsage {
  id: string;
  name: string;
  /** The machine open in this page. */
  open: boolean;
  /** Checkpoints' machine states, the disk index and log, markers: what rewinds need. */
  historyBytes: number;
  /** The guest's own disk writes (never evicted). */
  dataBytes: number;
  checkpoints: number;
  points: number;
  branches: number;
}

/** The storage panel's content (the quota and persistence come from the page). */
export interface StorageReport {
  machines: MachineUsage[];
  imageCache: ImageCacheUsage;
  retention: RetentionSetting;
}

/** Writes of one branch grouped in time buckets, so thousands of writes draw as a few bars. */
export interface ActivityBucket {
  branch: number;
  /** Bucket start (ms since the epoch), first and last write seq in it, and how many bytes. */
  time: number;
  firstSeq: number;
  lastSeq: number;
  writes: number;
  bytes: number;
}

/** Everything the timeline draws. */
export interface Timeline {
  now: Point;
  branches: BranchRecord[];
  markers: MarkerRecord[];
  checkpoints: CheckpointSummary[];
  activity: ActivityBucket[];
}

export interface ServiceDeps {
  fetch: Fetch;
  /** This origin's storage use and quota (navigator.storage.estimate), for eviction under pressure. */
  estimate?: () => Promise<{ usage?: number; quota?: number }>;
  /** Takes an exclusive, tab-wide lock; false when another tab holds it. */
  acquireLock?: (name: string) => Promise<boolean>;
  /** IndexedDB database name (tests use their own). */
  dbName?: string;
}

/** Another tab runs this machine: two writers on one log would corrupt it. */
export class MachineBusyError extends Error {
  constructor(name: string) {
    super(`"${name}" is already running in another tab or window. Use that one, or close it and reload this page.`);
    this.name = "MachineBusyError";
  }
}

/** Longest gap between progress reports while chunks stream in. */
const PROGRESS_INTERVAL_MS = 200;
/** How long after a shared point resumed it is cut and stored as the machine's first checkpoint. */
const SHARED_SAVE_DELAY_MS = 3000;
/** ...or this long after it arrived, if the page never asked for it. */
const SHARED_HANDOUT_WAIT_MS = 10_000;
/** Width of an activity bucket on the timeline. */
const ACTIVITY_BUCKET_MS = 1000;
/** Automatic thinning runs after this many new checkpoints, or this long after the last one. */
const THIN_EVERY_CHECKPOINTS = 30;
const THIN_EVERY_MS = 10 * 60 * 1000;
/** What a quota error evicts from the image cache before the write is tried again. */
const PRESSURE_EVICT_BYTES = 64 * 1024 * 1024;
const DEFAULT_RETENTION: RetentionSetting = { rule: DEFAULT_RULE, auto: true };

/** Two machine shapes a state moves between only by starting a new emulator. */
const sameShape = (a: Hardware, b: Hardware) =>
  a.memoryBytes === b.memoryBytes &&
  a.network === b.network &&
  a.sharedFolder === b.sharedFolder &&
  a.vgaMemoryBytes === b.vgaMemoryBytes &&
  a.bootDevice === b.bootDevice &&
  Boolean(a.serial1) === Boolean(b.serial1) &&
  JSON.stringify(a.drives ?? null) === JSON.stringify(b.drives ?? null);
/** Video memory a person can pick (a state holds it whole). */
const BOOTABLE_VGA = new Set([2, 8, 16].map((m) => m * 2 ** 20));
const sameSource = (a: MachineSource, b: MachineSource) => a.repo === b.repo && a.kind === b.kind && a.name === b.name;
const summary = ({ refs: _refs, pieceCount: _count, ...rest }: CheckpointRecord): CheckpointSummary => rest;

/** A branch and every branch forked from it, at any depth. */
function withDescendants(branches: readonly BranchRecord[], id: number): Set<number> {
  const out = new Set([id]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const b of branches) {
      if (b.parent !== null && out.has(b.parent) && !out.has(b.id)) {
        out.add(b.id);
        grew = true;
      }
    }
  }
  return out;
}

/** A published machine state as fetched: its pieces (stored later as a checkpoint) and the whole. */
interface FetchedState {
  pieces: Uint8Array[];
  joined: Uint8Array;
}

/** A snapshot's machine state: every piece fetched (in parallel) and verified, in order. */
async function fetchState(base: ChunkSource, m: MachineStateRef): Promise<FetchedState> {
  const wrongSize = () => new Error("The snapshot's machine state has the wrong size; it cannot be resumed.");
  const joined = new Uint8Array(m.stateBytes);
  const pieces: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(m.pieces.length);
  let next = 0;
  let at = 0;
  await Promise.all(
    m.pieces.map(async (ref, i) => {
      pieces[i] = await base.getRef(ref, null, `machine state piece ${i}`, false);
      // Each piece is copied into place once those before it have come, so joining tens of MiB
      // overlaps the downloads instead of holding up the resume after the last one.
      for (let p = pieces[next]; p; p = pieces[++next]) {
        if (at + p.byteLength > joined.byteLength) throw wrongSize();
        joined.set(p, at);
        at += p.byteLength;
      }
    }),
  );
  if (at !== m.stateBytes) throw wrongSize();
  return { pieces: pieces as Uint8Array[], joined };
}

export class DiskService {
  private storePromise: Promise<LocalStore> | undefined;
  private disk: Disk | undefined;
  private checkpoints: Checkpoints | undefined;
  private progress: ((stats: TransferStats) => void) | undefined;
  /** Stops the open machine's background metadata fetch when another opens. */
  private metadataFetch: AbortController | undefined;
  private progressTimer: ReturnType<typeof setInterval> | undefined;
  private errorListener: ((message: string) => void) | undefined;
  private changeListener: (() => void) | undefined;
  /** The shape the machine runs in now, and the one its image (or snapshot) has. */
  private hardware: Hardware = LEGACY_HARDWARE;
  private imageHardware: Hardware = LEGACY_HARDWARE;
  /** The shared point of a snapshot being opened, while its state streams in (see open). */
  private shared:
    | {
        id: string;
        summary: CheckpointSummary;
        state: Promise<FetchedState>;
        stored: Promise<void>;
        delivered: () => void;
        /** Its joined state went to the page (moved, on a worker): later restores load the checkpoint. */
        handedOut: boolean;
      }
    | undefined;
  private activity: ActivityBucket[] = [];
  private importing: AbortController | undefined;
  private remoteChecked: Promise<string | null> = Promise.resolve(null);
  /** A brought image's snapshot between its publishEstimate and its publish. */
  private pendingSnapshot: { checkpoint: string; snapshot: SnapshotFiles } | undefined;
  private activitySeq = 0;
  /** Bumped when the log is rewritten (reset, sweep): summaries read before it are dropped. */
  private activityGeneration = 0;
  private imageCacheInstance: ImageCache | undefined;
  /** Checkpoints saved since the last thinning, and when it ran (see maybeThin). */
  private checkpointsSinceThin = 0;
  private lastThin = Date.now();
  private thinning: Promise<SweepResult> | undefined;
  /** Settles once every checkpoint posted so far is listed (saveCheckpoint; its store may go on). */
  private listing: Promise<unknown> = Promise.resolve();
  private autoThinning = false;

  /** See setRepositoryPatience. */
  private patienceMs = OUTAGE_PATIENCE_MS;

  constructor(private readonly deps: ServiceDeps) {}

  /**
   * How long fetches wait out an unreachable repository before the machine stops with an error
   * (OUTAGE_PATIENCE_MS unless the person chose otherwise). Applies to disks opened after the call.
   */
  setRepositoryPatience(seconds: number): void {
    if (!Number.isFinite(seconds) || seconds <= 0) throw new RangeError(`a repository patience of ${seconds} s makes no sense`);
    this.patienceMs = seconds * 1000;
  }

  private store(): Promise<LocalStore> {
    this.storePromise ??= LocalStore.open(this.deps.dbName);
    return this.storePromise;
  }

  private get imageCache(): ImageCache {
    this.imageCacheInstance ??= new ImageCache(this.store(), this.deps.estimate);
    return this.imageCacheInstance;
  }

  private get opened(): Disk {
    if (!this.disk) throw new Error("no machine is open");
    return this.disk;
  }

  private get saved(): Checkpoints {
    if (!this.checkpoints) throw new Error("no machine is open");
    return this.checkpoints;
  }

  async open(request: OpenRequest): Promise<MachineInfo> {
    const storeReady = this.store();
    // A new visitor's manifest is on its way while IndexedDB opens (slow in a fresh profile).
    const early = "repo" in request ? loadManifest(storeReady, request, this.deps.fetch) : undefined;
    early?.catch(() => undefined); // awaited below
    const store = await storeReady;
    const machines = await store.listMachines();
    let machine: MachineRecord | undefined;
    if ("machineId" in request) {
      machine = machines.find((m) => m.id === request.machineId);
      if (!machine) throw new Error(`There is no machine ${request.machineId} in this browser (it may have been discarded).`);
    }
    let source: MachineSource =
      machine?.source ?? ("repo" in request ? { repo: request.repo, kind: request.kind, name: request.name } : never());
    let manifest = await (early ?? loadManifest(store, source, this.deps.fetch));
    const requested = source;
    if (!machine && manifest.booted) {
      // A new machine of an image that has a booted snapshot starts from it: a ready shell.
      const booted: MachineSource = { repo: source.repo, kind: "snapshot", name: manifest.booted };
      const bootedManifest = await loadManifest(store, booted, this.deps.fetch).catch(() => null);
      if (bootedManifest) {
        source = booted;
        manifest = bootedManifest;
      }
    }
    if (!machine && "repo" in request && !request.fresh) {
      machine = machines
        .filter((m) => sameSource(m.source, source) || sameSource(m.source, requested))
        .sort((a, b) => b.opened - a.opened)[0];
      if (machine && !sameSource(machine.source, source)) manifest = await loadManifest(store, machine.source, this.deps.fetch);
    }
    const now = Date.now();
    machine ??= newMachine(uniqueName(requested.kind === "image" ? requested.name : `shared ${requested.name.slice(0, 6)}`, machines), source, now);
    if (this.deps.acquireLock && !(await this.deps.acquireLock(`sandglass:machine:${machine.id}`))) {
      throw new MachineBusyError(machine.name);
    }
    const base = await this.baseOf(store, machine.source, manifest);
    // A snapshot's machine state becomes this machine's first checkpoint, the start of its
    // timeline. It starts streaming in now; open() answers without waiting, so the page loads the
    // emulator meanwhile (restoreCheckpoint waits for the state).
    const sharedState =
      manifest.machine && !(await store.listCheckpoints(machine.id)).length ? fetchState(base, manifest.machine) : null;
    sharedState?.catch(() => undefined); // reported through restoreCheckpoint
    this.disk = await Disk.open(store, base, machine);
    // The file system's metadata follows in the background (chunk-source.ts, fetchMetadata).
    this.metadataFetch?.abort();
    this.metadataFetch = new AbortController();
    void base.fetchMetadata(this.metadataFetch.signal).catch(() => undefined);
    this.disk.onFlushError = (err) => {
      this.errorListener?.(storageFailure(err, "the latest disk writes"));
      // Room first (the image cache can be fetched again), then the writes held in memory are
      // stored again.
      if (!isQuotaError(err)) return;
      void this.imageCache.evict(PRESSURE_EVICT_BYTES).then(
        (freed) => (freed.bytes > 0 ? this.disk?.flush() : undefined),
        () => undefined,
      ).catch(() => undefined);
    };
    this.disk.onQuiet = () => this.changeListener?.();
    this.checkpoints = await Checkpoints.open(store, machine.id);
    this.imageHardware = hardwareOf(manifest);
    this.shared = undefined;
    let resume: CheckpointSummary | null;
    machine.opened = now;
    const wasOff = machine.off === true;
    delete machine.off;
    if (sharedState && manifest.machine) {
      resume = this.startSharedPoint(store, machine, manifest.machine, sharedState);
    } else {
      await store.putMachine(machine);
      if (wasOff) {
        // Turned off (its settings changed): a cold boot here, whose writes fork from the
        // checkpoints behind it (their memory is not on the disk).
        await this.disk.setSettings({ off: false });
        await this.disk.seek(this.disk.now, true);
      }
      resume = wasOff ? null : await this.resumePoint();
    }
    // A checkpoint resumes in the shape it was taken in; a cold boot in the machine's settings.
    this.hardware = resume ? (resume.hardware ?? this.imageHardware) : (machine.hardware ?? this.imageHardware);
    return {
      id: machine.id,
      name: machine.name,
      source: machine.source,
      size: manifest.size,
      chunkSize: manifest.chunkSize,
      description: manifest.description,
      now: this.disk.now,
      resume,
      hardware: this.hardware,
      input: machine.input ?? { keyboard: true, mouse: true },
      image: await this.rootImage(store, machine.source.repo, manifest),
      remoteUrl: base.remote?.url ?? null,
    };
  }

  /**
   * The copy-on-read base disk of a source. An image opened from a URL reads its chunks from
   * there and is checked, in the background, to still be the file it was pinned as: a change is
   * reported (and every later fetch refused) while what is here keeps working.
   */
  private async baseOf(store: LocalStore, source: MachineSource, manifest: DiskManifest): Promise<ChunkSource> {
    const record = source.repo === LOCAL_REPO ? await store.getManifest(manifestUrl(source)) : undefined;
    if (!record?.remote) {
      const base = new ChunkSource(manifest, source.repo, store, this.deps.fetch);
      base.cache = this.imageCache;
      base.patienceMs = this.patienceMs;
      return base;
    }
    const blocks = new RemoteBlocks(record.remote, manifest.chunkSize, this.deps.fetch);
    const pins = await store.listPins(record.url);
    const base = new ChunkSource(manifest, source.repo, store, this.deps.fetch, { blocks, pins, key: record.url });
    base.patienceMs = this.patienceMs;
    this.remoteChecked = base.verifyRemote().then(
      () => null,
      (err: unknown) => (err instanceof Error ? err.message : String(err)),
    );
    return base;
  }

  /**
   * Announces the shared point as the machine's first checkpoint and stores it once `state` has
   * arrived and verified. The machine record is stored only then: a broken snapshot leaves nothing.
   */
  private startSharedPoint(
    store: LocalStore,
    machine: MachineRecord,
    m: MachineStateRef,
    state: Promise<FetchedState>,
  ): CheckpointSummary {
    const checkpoints = this.saved;
    const announced: CheckpointSummary = {
      machine: machine.id,
      id: crypto.randomUUID(),
      branch: 0,
      seq: 0,
      time: Date.now(),
      format: CHECKPOINT_FORMAT,
      stateBytes: m.stateBytes,
      storedBytes: 0,
      auto: false,
      name: "Shared point",
      ...(m.thumbnail ? { thumbnail: m.thumbnail } : {}),
    };
    let delivered!: () => void;
    const handedOut = new Promise<void>((r) => (delivered = r));
    const stored = state.then(async ({ pieces }) => {
      await store.putMachine(machine);
      // Cutting and hashing tens of MiB would hold up handing the state to the page and the
      // guest's first disk reads: it waits until the machine has resumed.
      await Promise.race([handedOut, sleep(SHARED_HANDOUT_WAIT_MS)]);
      await sleep(SHARED_SAVE_DELAY_MS);
      checkpoints.onBackgroundError = (err) => this.errorListener?.(storageFailure(err, "the shared point"));
      // Its pieces reach IndexedDB later (background): tens of MiB must not slow the resumed guest.
      const { id, auto, name, thumbnail } = announced;
      const options = { id, auto, ...(name ? { name } : {}), ...(thumbnail ? { thumbnail } : {}) };
      await checkpoints.save({ branch: 0, seq: 0 }, joinState(pieces), options, true);
    });
    stored.catch(() => undefined); // reported through restoreCheckpoint
    this.shared = { id: announced.id, summary: announced, state, stored, delivered, handedOut: false };
    return announced;
  }

  /** Waits until a shared point being opened is this machine's checkpoint (no-op otherwise). */
  private async settled(): Promise<void> {
    await this.shared?.stored;
  }

  // ── the disk ────────────────────────────────────────────────────────────────────────────────

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.opened.read(offset, length);
  }

  /** `data` is the disk's from now on (the page hands it over: see DiskBackend). */
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.opened.write(offset, data, true);
  }

  async flush(): Promise<void> {
    await this.settled();
    await this.opened.flush();
    await this.saved.writing;
  }

  /** Throws away the machine's changes and history: its disk is the repository image again. */
  async resetToImage(): Promise<void> {
    await this.settled();
    await this.opened.reset();
    await this.saved.refresh();
    this.filesInstance?.forget(); // the history the opened points read is gone (point-files.ts)
    this.activityGeneration++;
    this.activity = [];
    this.activitySeq = 0;
  }

  stats(): TransferStats {
    return { ...this.opened.base.stats };
  }

  /** Indexes of base chunks with a block the machine changed, as seen from `point` (read only; the crash tests). */
  changedChunksAt(point: Point): Promise<number[]> {
    return this.opened.changedChunks(point);
  }

  /** The disk's bytes as they were at `point`, without moving "now" (read only; the crash tests). */
  readAt(point: Point, offset: number, length: number): Promise<Uint8Array> {
    return this.opened.readAt(point, offset, length);
  }

  /**
   * Loads a checkpoint's machine state as a restore would (every piece found, the whole the size
   * it was saved at) and returns its size, without restoring it (read only; the crash tests).
   */
  async checkpointBytes(id: string): Promise<number> {
    return (await this.saved.load(id)).state.byteLength;
  }

  // ── checkpoints and rewinds ─────────────────────────────────────────────────────────────────

  /** The disk point after every write issued so far: call it in the same task as save_state(). */
  pointNow(): Promise<Point> {
    return this.opened.pointNow();
  }

  /**
   * Stores a machine state taken at `point` (see pointNow). Resolves once stored; a rewind asked
   * for meanwhile waits only until it is listed (see restoreCheckpoint).
   */
  async saveCheckpoint(point: Point, state: Uint8Array, options: Omit<SaveOptions, "onListed">): Promise<CheckpointSummary> {
    // Before any await: a restore posted after this save must find it listed (the fork rule).
    let listed!: () => void;
    this.listing = Promise.all([this.listing, new Promise<void>((resolve) => (listed = resolve))]);
    try {
      return await this.storeCheckpoint(point, state, { ...options, onListed: listed });
    } finally {
      listed();
    }
  }

  private async storeCheckpoint(point: Point, state: Uint8Array, options: SaveOptions): Promise<CheckpointSummary> {
    await this.settled();
    const failed = (err: unknown) => {
      throw new Error(storageFailure(err, "this checkpoint"));
    };
    // The writes before the checkpoint are stored first: a stored checkpoint must never point past
    // the stored log (a reload would restore RAM over a disk that lacks its last writes).
    // A full quota: make room in the image cache (it can be fetched again) and try once more.
    const withRoom = async <T>(attempt: () => Promise<T>): Promise<T> => {
      try {
        return await attempt();
      } catch (err) {
        if (!isQuotaError(err)) throw err;
        // Tried again even if this eviction freed nothing: one started by a failed background
        // flush may just have made room.
        await this.imageCache.evict(PRESSURE_EVICT_BYTES);
        return attempt();
      }
    };
    await withRoom(() => this.opened.flush()).catch(failed);
    const record = await withRoom(() => this.saved.save(point, state, { ...options, hardware: this.hardware })).catch(failed);
    this.checkpointsSinceThin++;
    void this.maybeThin();
    void this.imageCache.enforce().catch(() => undefined);
    return summary(record);
  }

  /**
   * Moves the disk to a checkpoint's point and returns the machine state to restore (the caller's
   * own copy). `relaunch`: the checkpoint was taken in another machine shape (its settings were
   * changed since): the page must start a new emulator of that shape (open() gives it).
   */
  async restoreCheckpoint(id: string): Promise<{ checkpoint: CheckpointSummary; state: Uint8Array; relaunch?: boolean }> {
    const shared = this.shared;
    if (shared?.id === id && !shared.handedOut && this.opened.now.seq === 0 && this.opened.now.branch === 0) {
      // Resuming the shared point as opened: its state straight from the network copy, the disk
      // already at its point (nothing written yet).
      const state = (await shared.state).joined;
      shared.handedOut = true;
      shared.delivered();
      return { checkpoint: shared.summary, state };
    }
    await this.settled();
    // A checkpoint posted before this rewind is listed before it looks: one being stored at the
    // target's point is newer, and the disk must fork from there (the store goes on meanwhile).
    await this.listing;
    const { record, state } = await this.saved.load(id, true);
    const point = { branch: record.branch, seq: record.seq };
    const laterCheckpoint = (await this.saved.list()).some(
      (c) => c.branch === record.branch && c.seq === record.seq && c.time > record.time,
    );
    await this.opened.seek(point, laterCheckpoint);
    const shape = record.hardware ?? this.imageHardware;
    if (sameShape(shape, this.hardware)) return { checkpoint: summary(record), state };
    return { checkpoint: summary(record), state, relaunch: true };
  }

  /**
   * Changes the open machine's settings (what a person brought an image with, or any machine's
   * RAM): the machine is turned off, and the next open cold-boots it at its disk's point in the
   * new shape. Keyboard and mouse are the page's, and apply at the next open too.
   */
  async changeSettings(change: { hardware?: Partial<Pick<Hardware, "memoryBytes" | "vgaMemoryBytes" | "bootDevice">>; input?: InputSettings }): Promise<void> {
    await this.settled();
    const disk = this.opened;
    const next: Hardware = { ...this.hardware, ...change.hardware };
    const devices = drivesOf(next, disk.size).map((d) => d.device);
    if (!devices.includes(next.bootDevice)) throw new Error(`This machine has no ${next.bootDevice} drive to boot from.`);
    if (!Number.isSafeInteger(next.memoryBytes) || next.memoryBytes < 8 * 2 ** 20 || next.memoryBytes > 2 ** 31) {
      throw new Error("Memory must be from 8 MiB to 2 GiB.");
    }
    if (!BOOTABLE_VGA.has(next.vgaMemoryBytes)) throw new Error("Video memory must be 2, 8 or 16 MiB.");
    await disk.flush();
    const shapeChanged = !sameShape(next, this.hardware);
    await disk.setSettings({
      hardware: next,
      ...(change.input ? { input: change.input } : {}),
      ...(shapeChanged ? { off: true } : {}),
    });
  }

  /** Moves the disk alone to `point` (the machine must cold-boot on it). */
  async seekDisk(point: Point): Promise<void> {
    // A cold boot departs from any checkpoint at that point: what follows is a new future.
    await this.settled();
    await this.opened.flush(); // a bookmark just made is stored (read below) only at a flush
    const checkpointHere = (await this.saved.list()).some((c) => c.branch === point.branch && c.seq === point.seq);
    // Only kept points can be gone back to: a thinned one's disk versions may be deleted.
    const store = await this.store();
    const markerHere = (await store.listMarkers(this.opened.id)).some((m) => m.branch === point.branch && m.seq === point.seq);
    const tip = this.opened.branchList().some((b) => b.id === point.branch && b.head === point.seq);
    if (!checkpointHere && !markerHere && !tip) throw new Error("That point is no longer in this machine's history (it was thinned).");
    await this.opened.seek(point, checkpointHere);
  }

  /** Sets a named bookmark at the current point. */
  bookmark(name: string): Promise<MarkerRecord> {
    return this.opened.mark("bookmark", name);
  }

  async timeline(): Promise<Timeline> {
    const store = await this.store();
    const disk = this.opened;
    await disk.flush();
    // Activity is summarised incrementally: only log records since the last call are read, so
    // the timeline's cost does not grow with the length of history.
    const generation = this.activityGeneration;
    const [markers, checkpoints, log] = await Promise.all([
      store.listMarkers(disk.id),
      this.checkpointSummaries(),
      store.listLog(disk.id, this.activitySeq + 1),
    ]);
    // Calls overlap: another may have summarised some of these meanwhile, or the log may have
    // been rewritten since this one read it (a reset or a sweep: then it is summarised anew).
    if (generation === this.activityGeneration) {
      const fresh = log.filter((r) => r.seq > this.activitySeq);
      this.activity = bucketActivity(fresh, this.activity);
      this.activitySeq = fresh.at(-1)?.seq ?? this.activitySeq;
    }
    const markerIds = new Set(checkpoints.map((c) => c.id));
    return {
      now: disk.now,
      branches: disk.branchList(),
      // Checkpoints are listed with their thumbnails; their plain markers would only duplicate them.
      markers: markers.filter((m) => !markerIds.has(m.id)),
      // Without thumbnails: the page keeps those it has (see thumbnails()), so a refresh does not
      // carry kilobytes per checkpoint for thousands of checkpoints.
      checkpoints: checkpoints.map(({ thumbnail: _thumbnail, ...rest }) => rest).sort((a, b) => a.time - b.time),
      activity: this.activity,
    };
  }

  /** The thumbnails of the given checkpoints (those that have one), by id. */
  async thumbnails(ids: string[]): Promise<Record<string, string>> {
    const wanted = new Set(ids);
    const found: Record<string, string> = {};
    for (const c of await this.checkpointSummaries()) {
      if (wanted.has(c.id) && c.thumbnail) found[c.id] = c.thumbnail;
    }
    return found;
  }

  /** This machine's checkpoints, with a shared point still being stored listed as announced. */
  private async checkpointSummaries(): Promise<CheckpointSummary[]> {
    const checkpoints = this.saved;
    const stored = (await checkpoints.list()).map((c) => (checkpoints.isPending(c.id) ? { ...summary(c), pending: true as const } : summary(c)));
    const announced = this.shared?.summary;
    return announced && !stored.some((c) => c.id === announced.id) ? [...stored, { ...announced, pending: true }] : stored;
  }

  /**
   * Follows a snapshot's parents to its image. Only a name is wanted, so a copy already in this
   * browser will do: the network is busy streaming the machine's state at this moment.
   */
  private async rootImage(store: LocalStore, repo: string, manifest: DiskManifest): Promise<string | null> {
    let current: DiskManifest | null = manifest;
    for (let hops = 0; current && hops < 32; hops++) {
      // An image brought into this browser has no "new machine from the repository's image".
      if (current.kind === "image") return repo === LOCAL_REPO ? null : current.name;
      const parent: SourceRef | undefined = current.parent;
      if (!parent) return null;
      const source: MachineSource = { repo, kind: parent.kind, name: parent.name };
      current =
        (await store.getManifest(manifestUrl(source)))?.manifest ?? (await loadManifest(store, source, this.deps.fetch).catch(() => null));
    }
    return null;
  }

  /**
   * The checkpoint a reload resumes: the newest at or before "now" on its branch (the latest write
   * it saw, then the latest taken). A branch with none yet resumes the checkpoint it forked from:
   * the first write after a rewind forks a branch that holds no checkpoint until the next one, and
   * a reload in that moment must not cold-boot. A branch forked anywhere else began with a cold
   * boot (a disk-only rewind), which no older checkpoint's memory belongs to: none is resumed.
   */
  private async resumePoint(): Promise<CheckpointSummary | null> {
    const disk = this.opened;
    const saved = await this.saved.list();
    const newest = (found: CheckpointRecord[]) => found.sort((a, b) => b.seq - a.seq || b.time - a.time)[0];
    let resume = newest(saved.filter((c) => c.branch === disk.now.branch && c.seq <= disk.now.seq));
    const branch = disk.branchList().find((b) => b.id === disk.now.branch);
    if (!resume && branch?.parent != null) resume = newest(saved.filter((c) => c.branch === branch.parent && c.seq === branch.forkSeq));
    return resume ? summary(resume) : null;
  }

  // ── sharing ─────────────────────────────────────────────────────────────────────────────────

  /**
   * Publishes a checkpoint as a snapshot; returns its id and cost. A machine of a repository image
   * publishes to that repository, through `options.repo` if given (its server's URL when reads
   * come from a bucket or CDN); one of an image a person brought (only this browser has it)
   * to `options.repo`, uploading the image's chunks it lacks too: ask first (publishEstimate).
   */
  async publish(checkpointId: string, options: { token?: string; repo?: string } = {}): Promise<UploadResult> {
    const base = this.opened.base;
    let result: UploadResult;
    if (base.repoUrl !== LOCAL_REPO) {
      result = await uploadSnapshot(options.repo ?? base.repoUrl, await this.snapshotOf(checkpointId), this.deps.fetch, options.token);
    } else {
      const repo = this.broughtTarget(options.repo);
      const snapshot = await this.broughtSnapshot(checkpointId);
      const load = (ref: string) => base.getRef(ref, null, "a chunk of the image");
      result = await uploadSnapshot(repo, snapshot, this.deps.fetch, options.token, load);
      this.pendingSnapshot = undefined;
    }
    // A point shared as a link is never thinned (retention.ts).
    await this.saved.markPublished(checkpointId, result.id);
    return result;
  }

  /**
   * What publishing a checkpoint of an image a person brought uploads to `repo` (the chunks of
   * the image and of the changes it lacks, and the state), before anything is uploaded.
   */
  async publishEstimate(checkpointId: string, repo: string, token?: string): Promise<{ files: number; bytes: number }> {
    const snapshot = await this.broughtSnapshot(checkpointId);
    const missing = await missingChunks(this.broughtTarget(repo), referencedChunks(snapshot.manifest), this.deps.fetch, token);
    const chunkSize = snapshot.manifest.chunkSize;
    return { files: missing.length, bytes: missing.reduce((n, ref) => n + (snapshot.files.get(ref)?.byteLength ?? chunkSize), 0) };
  }

  private broughtTarget(repo: string | undefined): string {
    if (!repo || repo === LOCAL_REPO) throw new Error("An image you brought is published to a repository: none was given.");
    return repo;
  }

  /** The snapshot of a checkpoint of a brought image, built once for the estimate and the upload. */
  private async broughtSnapshot(checkpointId: string) {
    if (this.pendingSnapshot?.checkpoint !== checkpointId) {
      const snapshot = await this.snapshotOf(checkpointId);
      snapshot.manifest.broughtImage = true;
      this.pendingSnapshot = { checkpoint: checkpointId, snapshot };
    }
    return this.pendingSnapshot.snapshot;
  }

  /**
   * At most how large exportBundle's file for a checkpoint is (before compression): every distinct
   * chunk of the disk plus the machine state. Cheap: says the size before anything is written.
   */
  async exportEstimate(checkpointId: string): Promise<number> {
    const record = (await this.saved.list()).find((c) => c.id === checkpointId);
    if (!record) throw new Error("That checkpoint is not in this machine any more.");
    const base = this.opened.base;
    const { chunks, chunkSize } = base.manifest;
    const changed = await this.opened.changedChunks({ branch: record.branch, seq: record.seq });
    // A URL image's chunks not read yet are fetched for the file: counted as if none were zeros.
    return (new Set(chunks.filter((c) => c !== null)).size + base.unknownChunks + changed.length) * chunkSize + record.stateBytes;
  }

  /** A checkpoint as one bundle file holding every chunk it needs (see bundle.ts). */
  async exportBundle(checkpointId: string): Promise<{ name: string; bytes: Uint8Array }> {
    const snapshot = await this.snapshotOf(checkpointId);
    const base = this.opened.base;
    const have = new Set([...snapshot.files.keys()].map(chunkHash));
    for (const ref of referencedChunks(snapshot.manifest)) {
      if (have.has(chunkHash(ref))) continue;
      const { ref: stored, stored: bytes } = await storeForm(await base.getRef(ref, null, "a disk chunk"));
      snapshot.files.set(stored, bytes);
      have.add(chunkHash(ref));
    }
    return { name: `${snapshot.manifest.name}.sandglass`, bytes: encodeBundle(snapshot.manifest, snapshot.files) };
  }

  /** Keeps a bundle's snapshot in this browser, as if `repo` had it; returns the id to open. */
  async importBundle(bytes: Uint8Array, repo: string): Promise<string> {
    // A file with several points opens its newest (openBundle, in "files at a point").
    return (await this.openBundle(bytes, repo)).id;
  }

  private async snapshotOf(checkpointId: string) {
    await this.settled();
    // A snapshot lists the whole disk: a URL image's chunks not read yet are fetched and pinned.
    await this.opened.base.fetchAll();
    const { record, state } = await this.saved.load(checkpointId);
    const disk = this.opened;
    return buildSnapshot({
      disk,
      point: { branch: record.branch, seq: record.seq },
      state,
      hardware: record.hardware ?? this.imageHardware,
      description: `${disk.record.name}, ${new Date(record.time).toISOString().slice(0, 16).replace("T", " ")} UTC`,
      ...(record.thumbnail ? { thumbnail: record.thumbnail } : {}),
    });
  }

  // ── machines ────────────────────────────────────────────────────────────────────────────────

  async listMachines(): Promise<MachineRecord[]> {
    const store = await this.store();
    return (await store.listMachines()).sort((a, b) => b.opened - a.opened);
  }

  async renameMachine(id: string, name: string): Promise<void> {
    const store = await this.store();
    const machine = await store.getMachine(id);
    if (!machine) throw new Error(`no machine ${id}`);
    const trimmed = name.trim().slice(0, 80);
    if (!trimmed) throw new Error("A machine needs a name.");
    await store.putMachine({ ...machine, name: trimmed });
  }

  /** Deletes a machine that is not the one open here. */
  async discardMachine(id: string): Promise<void> {
    if (this.disk?.id === id) throw new Error("Close this machine before discarding it.");
    const store = await this.store();
    const machine = await store.getMachine(id);
    await store.deleteMachine(id);
    // An image brought into this browser goes with the last machine that used it.
    if (machine) await forgetOwnImage(store, machine.source);
  }

  // ── storage: what is kept, thinning, the image cache ────────────────────────────────────────

  /** What every machine and the image cache keep in this browser, and the retention rule. */
  async storageReport(): Promise<StorageReport> {
    const store = await this.store();
    // Counted as stored: writes a full quota holds in memory are not (they may never be).
    await this.disk?.flush().catch(() => undefined);
    const machines: MachineUsage[] = [];
    for (const m of await store.listMachines()) {
      const [data, packs, checkpoints, counts, branches] = await Promise.all([
        store.dataSizes(m.id),
        store.packInfos(m.id),
        store.listCheckpoints(m.id),
        store.indexCounts(m.id),
        store.listBranches(m.id),
      ]);
      const records = checkpoints.reduce((n, c) => n + c.refs.byteLength + (c.thumbnail?.length ?? 0) + 300, 0);
      machines.push({
        id: m.id,
        name: m.name,
        open: m.id === this.disk?.id,
        dataBytes: [...data.values()].reduce((n, b) => n + b, 0),
        historyBytes:
          [...packs.values()].reduce((n, p) => n + p.bytes, 0) +
          records +
          counts.groups * INDEX_RECORD_BYTES.groups +
          counts.log * INDEX_RECORD_BYTES.log +
          counts.markers * INDEX_RECORD_BYTES.marker,
        checkpoints: checkpoints.length,
        points: checkpoints.length + counts.markers,
        branches: Math.max(1, branches.length),
      });
    }
    machines.sort((a, b) => Number(b.open) - Number(a.open) || b.historyBytes + b.dataBytes - (a.historyBytes + a.dataBytes));
    return { machines, imageCache: await this.imageCache.usage(), retention: await this.retention() };
  }

  async retention(): Promise<RetentionSetting> {
    return (await (await this.store()).getSetting<RetentionSetting>(SETTINGS.retention)) ?? DEFAULT_RETENTION;
  }

  async setRetention(setting: RetentionSetting): Promise<void> {
    const checked: RetentionSetting = { rule: checkRule(setting.rule), auto: Boolean(setting.auto) };
    await (await this.store()).putSetting(SETTINGS.retention, checked);
  }

  /**
   * Thins the open machine's history by the retention rule (or `rule`, to try one): the points it
   * no longer keeps go, and everything only they needed (history-sweep.ts).
   */
  thin(rule?: RetentionSetting["rule"]): Promise<SweepResult> {
    const run = (this.thinning ?? Promise.resolve()).catch(() => undefined).then(async () => {
      await this.settled();
      const disk = this.opened;
      const store = await this.store();
      const [setting, checkpoints, markers, resume] = await Promise.all([this.retention(), this.saved.list(), store.listMarkers(disk.id), this.resumePoint()]);
      const plan = planThinning({
        rule: rule ? checkRule(rule) : setting.rule,
        time: Date.now(),
        at: disk.now,
        branches: disk.branchList(),
        checkpoints,
        markers,
        resume: resume?.id ?? null,
      });
      const result = await sweepHistory(store, disk, this.saved, { plan });
      this.filesInstance?.forget(); // opened points cached where blocks were (point-files.ts)
      this.checkpointsSinceThin = 0;
      this.lastThin = Date.now();
      await this.rebuildActivity();
      this.changeListener?.();
      return result;
    });
    this.thinning = run;
    return run;
  }

  /** Summarises the whole log again (a sweep deleted some of it). */
  private async rebuildActivity(): Promise<void> {
    const generation = ++this.activityGeneration;
    const log = await (await this.store()).listLog(this.opened.id);
    if (generation !== this.activityGeneration) return;
    this.activity = bucketActivity(log, []);
    this.activitySeq = log.at(-1)?.seq ?? 0;
  }

  /** Thins in the background when the rule says automatic and enough has piled up. */
  private async maybeThin(): Promise<void> {
    if (this.autoThinning) return;
    if (this.checkpointsSinceThin < THIN_EVERY_CHECKPOINTS && Date.now() - this.lastThin < THIN_EVERY_MS) return;
    this.autoThinning = true;
    try {
      if ((await this.retention()).auto) await this.thin();
    } catch (err) {
      this.errorListener?.(storageFailure(err, "the thinned history"));
    } finally {
      this.autoThinning = false;
    }
  }

  /**
   * Deletes a branch of the open machine and every branch forked from it, with their points and
   * whatever only they used. The branch the machine is on, and those it descends from, stay.
   */
  async deleteBranch(id: number): Promise<SweepResult> {
    await this.settled();
    const disk = this.opened;
    const branches = disk.branchList();
    if (!branches.some((b) => b.id === id)) throw new Error(`There is no branch ${id} in this machine.`);
    const onPath = ancestry(new Map(branches.map((b) => [b.id, b])), disk.now).map((s) => s.branch);
    if (onPath.includes(id)) throw new Error("The machine is on that branch (or one forked from it): switch to another branch first.");
    const result = await sweepHistory(await this.store(), disk, this.saved, { dropBranches: withDescendants(branches, id) });
    this.filesInstance?.forget(); // opened points cached where blocks were (point-files.ts)
    await this.rebuildActivity();
    return result;
  }

  /** The most bytes of repository images kept (0: as much as the browser allows). */
  setImageCacheBudget(bytes: number): Promise<void> {
    return this.imageCache.setBudget(bytes);
  }

  /** Deletes every repository chunk that can be fetched again (the person asked). */
  clearImageCache(): Promise<Eviction> {
    return this.imageCache.evict(Infinity);
  }

  // ── images people bring ─────────────────────────────────────────────────────────────────────

  /** What a file is, before anything is stored; throws NotAnImageError with the reason. */
  inspectImage(file: File): Promise<DetectedImage> {
    return inspectImage(fileImage(file));
  }

  /**
   * Imports a disk image file into this browser (see image-import.ts) and makes a new machine of
   * it; returns the machine's id. Only one import runs at a time; cancelImport() stops it.
   */
  async importImage(file: File, settings: ImportSettings, onProgress?: (p: ImportProgress) => void): Promise<string> {
    if (this.importing) throw new Error("Another image is being imported; wait for it or cancel it.");
    const store = await this.store();
    const control = new AbortController();
    this.importing = control;
    try {
      const { source } = await importImage(store, fileImage(file), settings, {
        signal: control.signal,
        ...(onProgress ? { onProgress } : {}),
      });
      const machine = newMachine(uniqueName(file.name.slice(0, 60) || source.name, await store.listMachines()), source, Date.now());
      if (settings.input) machine.input = settings.input;
      await store.putMachine(machine);
      return machine.id;
    } finally {
      this.importing = undefined;
    }
  }

  /**
   * For a machine of an image opened from a URL: null once the file is seen to be the one it was
   * pinned as (or cannot be reached: what is here still works), else why it is refused.
   */
  remoteCheck(): Promise<string | null> {
    return this.remoteChecked;
  }

  /** What the image at a URL is (one Range request), before anything is stored. */
  inspectUrl(url: string): Promise<DetectedUrl> {
    return inspectUrl(url, this.deps.fetch);
  }

  /**
   * Makes a new machine of the image at a URL, read a chunk at a time as the guest needs it (see
   * remote-image.ts); returns the machine's id.
   */
  async importUrl(url: string, settings: ImportSettings): Promise<string> {
    const store = await this.store();
    const { source } = await importUrl(store, url, settings, this.deps.fetch);
    const machine = newMachine(uniqueName(urlFileName(url).slice(0, 60) || source.name, await store.listMachines()), source, Date.now());
    if (settings.input) machine.input = settings.input;
    await store.putMachine(machine);
    return machine.id;
  }

  /** Stops the import under way (it then fails with ImportCancelled, having kept nothing). */
  cancelImport(): void {
    this.importing?.abort();
  }

  // ── files at a point (issue 14: the guest's files at any timeline point; point-files.ts) ──────

  private filesInstance: FilesAtPoints | undefined;

  private get files(): FilesAtPoints {
    this.filesInstance ??= new FilesAtPoints({ disk: () => this.opened, checkpoints: () => this.saved, store: () => this.store() });
    return this.filesInstance;
  }

  /**
   * What changed from point `a` to point `b`, file by file (any two, across branches), with how
   * far each side can be trusted. Throws UnreadableDiskError ("can't read files on this disk: …")
   * when the disk has no ext2/3/4 file system.
   */
  async filesDiff(a: FilesPoint, b: FilesPoint): Promise<FilesDiff> {
    await this.settled();
    return this.files.diff(a, b);
  }

  /** How far a point's view of its files can be trusted (the file browser's note). */
  filesInfo(p: FilesPoint): Promise<PointInfo> {
    return this.files.info(p);
  }

  /** A directory at a point (FileNotFoundError when it is not one there). */
  filesList(p: FilesPoint, path: string): Promise<FilesListing> {
    return this.files.list(p, path);
  }

  filesStat(p: FilesPoint, path: string): Promise<FileStat> {
    return this.files.stat(p, path);
  }

  /** A file's bytes at a point, from `offset`, at most `length` (16 MiB a call: large files in pieces). */
  filesRead(p: FilesPoint, path: string, offset?: number, length?: number): Promise<Uint8Array> {
    return this.files.read(p, path, offset, length);
  }

  /** A folder at a point as a zip (modes kept, symlinks as links). */
  filesZip(p: FilesPoint, path: string): Promise<Uint8Array> {
    return this.files.zip(p, path);
  }

  /** A unified diff of a small text file between two points. */
  filesTextDiff(a: FilesPoint, b: FilesPoint, path: string): Promise<FilesTextDiff> {
    return this.files.textDiff(a, b, path);
  }

  /** The checkpoints a file "with history" of this checkpoint carries (point-files.ts history()). */
  historyOf(checkpointId: string): Promise<string[]> {
    return this.files.history(checkpointId);
  }

  /**
   * At most how large exportPoints's file is (before compression): every distinct chunk of the
   * image, every chunk any of the points changed, and every point's machine state.
   */
  async exportPointsEstimate(checkpointIds: string[]): Promise<number> {
    const records = await this.saved.list();
    const disk = this.opened;
    const { chunks, chunkSize } = disk.base.manifest;
    const changed = new Set<number>();
    let states = 0;
    for (const id of checkpointIds) {
      const record = records.find((c) => c.id === id);
      if (!record) throw new Error("That checkpoint is not in this machine any more.");
      for (const chunk of await disk.changedChunks(record)) changed.add(chunk);
      states += record.stateBytes;
    }
    return (new Set(chunks.filter((c) => c !== null)).size + disk.base.unknownChunks + changed.size) * chunkSize + states;
  }

  /**
   * Several checkpoints as one bundle file (format version 2; one point: exportBundle's version 1),
   * oldest first: `npm run sandglass -- diff <file> 0 1` reads what changed between them, and the
   * page opens the newest.
   */
  async exportPoints(checkpointIds: string[]): Promise<{ name: string; bytes: Uint8Array }> {
    if (checkpointIds.length === 1) return this.exportBundle(checkpointIds[0]!);
    await this.settled();
    const disk = this.opened;
    // A snapshot lists the whole disk: a URL image's chunks not read yet are fetched and pinned.
    await disk.base.fetchAll();
    const records = await this.saved.list();
    const ordered = checkpointIds
      .map((id) => records.find((c) => c.id === id) ?? never(new Error("That checkpoint is not in this machine any more.")))
      .sort((a, b) => a.time - b.time);
    const { bytes, points } = await bundleHistory(
      disk,
      ordered.map((c) => c.id),
      async (id) => {
        const { record, state } = await this.saved.load(id);
        return {
          label: { time: record.time, branch: record.branch, seq: record.seq, checkpoint: record.id, ...(record.name ? { name: record.name } : {}) },
          point: { branch: record.branch, seq: record.seq },
          state,
          hardware: record.hardware ?? this.imageHardware,
          description: `${disk.record.name}, ${new Date(record.time).toISOString().slice(0, 16).replace("T", " ")} UTC`,
          ...(record.thumbnail ? { thumbnail: record.thumbnail } : {}),
        };
      },
      (ref) => disk.base.getRef(ref, null, "a disk chunk"),
    );
    return { name: `${points.at(-1)!.manifest.name}.sandglass`, bytes };
  }

  /**
   * Keeps a bundle's newest point in this browser (as importBundle does) and says which it was:
   * a file with history holds several, and the page opens the newest.
   */
  async openBundle(bytes: Uint8Array, repo: string): Promise<{ id: string; label: PointLabel; points: number }> {
    const { points, contents } = await decodeBundlePoints(bytes);
    const newest = points.reduce((a, b) => (b.label.time >= a.label.time ? b : a));
    // Only the chunks the opened point uses: the others' would sit in storage unused.
    const used = new Set(referencedChunks(newest.manifest).map(chunkHash));
    const kept = new Map([...contents].filter(([hash]) => used.has(hash)));
    const store = await this.store();
    const url = manifestUrl({ repo, kind: "snapshot", name: newest.manifest.name });
    // One transaction: a crash keeps the whole snapshot or nothing of it.
    await store.putBundle(kept, { url, manifest: newest.manifest, fetched: Date.now(), origin: "bundle" });
    return { id: newest.manifest.name, label: newest.label, points: points.length };
  }

  // ── reporting ───────────────────────────────────────────────────────────────────────────────

  /** Reports transfer counters while they change (at most every PROGRESS_INTERVAL_MS). */
  onProgress(listener: (stats: TransferStats) => void): void {
    this.progress = listener;
    clearInterval(this.progressTimer);
    let last = "";
    this.progressTimer = setInterval(() => {
      if (!this.disk) return;
      const stats = this.stats();
      const key = JSON.stringify(stats);
      if (key !== last) {
        last = key;
        this.progress?.(stats);
      }
    }, PROGRESS_INTERVAL_MS);
  }

  /** Reports points the timeline gained on its own (quiet points), so the page can redraw it. */
  onTimelineChange(listener: () => void): void {
    this.changeListener = listener;
  }

  /** Reports background failures (a write batch that could not be stored): nothing is lost yet. */
  onError(listener: (message: string) => void): void {
    this.errorListener = listener;
  }
}

/**
 * Says what a failed IndexedDB write means for the person. A full quota is the common case: the
 * machine keeps running and its changes stay in worker memory, stored at the next chance.
 */
export function storageFailure(err: unknown, what: string): string {
  if (isQuotaError(err)) {
    return (
      `This browser's storage for Sandglass is full, so ${what} could not be saved. The machine keeps running and ` +
      "keeps its changes in memory; they are saved as soon as there is room (discard machines you no longer need, " +
      "or free disk space). Reloading or closing the page now would lose them."
    );
  }
  return `${what[0]!.toUpperCase()}${what.slice(1)} could not be saved in this browser: ${err instanceof Error ? err.message : String(err)}`;
}

function never(err = new Error("unreachable")): never {
  throw err;
}

/** A machine with no history yet: its disk is `source` as it is. */
function newMachine(name: string, source: MachineSource, now: number): MachineRecord {
  return { id: crypto.randomUUID(), name, source, created: now, opened: now, lastSeq: 0, lastBranch: 0, now: { branch: 0, seq: 0 } };
}

function uniqueName(base: string, machines: MachineRecord[]): string {
  const names = new Set(machines.map((m) => m.name));
  if (!names.has(base)) return base;
  for (let i = 2; ; i++) if (!names.has(`${base} ${i}`)) return `${base} ${i}`;
}

/** Adds log records (in seq order) to activity buckets; returns a new list. */
function bucketActivity(
  log: { branch: number; time: number; seq: number; length: number }[],
  previous: ActivityBucket[] = [],
): ActivityBucket[] {
  const buckets = previous.map((b) => ({ ...b }));
  const open = new Map<number, ActivityBucket>();
  for (const b of buckets) open.set(b.branch, b);
  for (const r of log) {
    const time = r.time - (r.time % ACTIVITY_BUCKET_MS);
    let bucket = open.get(r.branch);
    if (!bucket || bucket.time !== time) {
      bucket = { branch: r.branch, time, firstSeq: r.seq, lastSeq: r.seq, writes: 0, bytes: 0 };
      open.set(r.branch, bucket);
      buckets.push(bucket);
    }
    bucket.lastSeq = r.seq;
    bucket.writes++;
    bucket.bytes += r.length;
  }
  return buckets;
}
