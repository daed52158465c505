/**
 * One running machine on the page: opens its disk in the worker, starts v86 on it (resuming its
 * newest checkpoint when it has one), takes checkpoints, rewinds, and exposes reactive state for
 * the UI. Components call its actions; they never touch the worker or v86.
 */
import { OwnImageImport } from "./own-image.svelte.ts";
import type { V86 } from "v86";
import { DiskBridge, handOver } from "../bridge/disk-bridge.ts";
import type { TransferStats } from "../engine/chunk-source.ts";
import type { CheckpointSummary, MachineInfo, StorageReport, Timeline } from "../engine/disk-service.ts";
import type { SweepResult } from "../engine/history-sweep.ts";
import type { RetentionSetting } from "../engine/store-format.ts";
import { formatBytes } from "./format.ts";
import { LOCAL_REPO, type Point } from "../engine/store-format.ts";
import { V86DiskAdapter } from "../vm/disk-adapter.ts";
import { startMachine, type EmulatorFiles } from "../vm/machine.ts";
import { restoreState } from "../vm/restore-state.ts";
import type { Startup } from "./startup.ts";
import { describe } from "./format.ts";
import { machineHash, snapshotHash, type Route } from "./route.ts";
import type { MachineRecord } from "../engine/store-format.ts";
import { SharedFolder, type SharedFile } from "../vm/shared-folder.ts";
import { GuestAgent, type AgentHost } from "../vm/guest-agent.ts";
import { FilesView } from "./files.svelte.ts";

export type Status = "opening" | "booting" | "resuming" | "running" | "rewinding" | "resetting" | "restarting" | "error";

/** While the guest stays busy, a checkpoint comes at the latest this long after its first change. */
export const AUTO_CHECKPOINT_MS = 5000;
/** After this long without keystrokes or disk access, pending changes are checkpointed at once. */
export const SETTLE_CHECKPOINT_MS = 1000;
/**
 * After a cold boot, automatic checkpoints wait for the first keystroke (or this long): states
 * taken mid-boot are of little use and each one stores tens of MiB while the guest is busy.
 */
export const BOOT_GRACE_MS = 60_000;
/** How often the auto-checkpoint rule is checked. */
const AUTO_TICK_MS = 250;
/**
 * How long a checkpoint waits for the guest's disk reads to be answered before it is taken anyway
 * (see takeCheckpoint): a read normally takes milliseconds, a slow repository seconds.
 */
const READS_ANSWERED_WAIT_MS = 10_000;

/** Renders a thumbnail of what the person sees (a data URL), or undefined if nothing to show. */
export type ThumbnailSource = () => string | undefined;

export interface ShareState {
  checkpoint: CheckpointSummary;
  /** "confirm": an image the person brought would be uploaded; they are asked first. */
  phase: "confirm" | "publishing" | "published" | "failed";
  /** What publishing uploads, for an image the person brought (said before anything is sent). */
  upload?: { files: number; bytes: number };
  link?: string;
  uploadedFiles?: number;
  totalFiles?: number;
  uploadedBytes?: number;
  error?: string;
  /** At most how large "Download as file" is (said before anything is written). */
  fileBytes?: number;
}

const TOKEN_KEY = "sandglass:upload-token";
/** A notice to show after the page reloads (opening a file navigates, which reloads). */
const CARRIED_NOTICE_KEY = "sandglass:notice";

/** The storage panel: the worker's report plus what only the page can ask the browser. */
export interface StorageView extends StorageReport {
  /** This origin's use and quota (navigator.storage.estimate), if the browser says. */
  usage: number | null;
  quota: number | null;
}

export class Session {
  status = $state<Status>("opening");
  error = $state<string | null>(null);
  notice = $state<string | null>(null);
  /** Why the URL this machine's image is read from is refused now (it changed), if it is. */
  remoteChanged = $state<string | null>(null);
  machine = $state<MachineInfo | null>(null);
  timeline = $state<Timeline | null>(null);
  transfer = $state<TransferStats>({ networkChunks: 0, networkBytes: 0, cacheChunks: 0, cacheBytes: 0, zeroChunks: 0 });
  /** Main-thread pause of the last checkpoint (ms) and bytes it added, for the status bar. */
  lastCheckpoint = $state<{ pauseMs: number; storedBytes: number } | null>(null);
  /** Changes since the newest checkpoint: a reload would resume without them. */
  unsaved = $state(false);
  /** The share dialog's state: publishing a checkpoint, its link, or why it failed. */
  share = $state<ShareState | null>(null);
  /** Every machine in this browser, newest opened first (for the machines menu). */
  machines = $state<MachineRecord[]>([]);
  /** Files in the guest's shared folder (/shared), or null if the machine has none. */
  sharedFiles = $state<SharedFile[] | null>(null);
  /** The guest network's backend: "fetch" (HTTP through the browser) or a wisp relay URL. */
  relay = $state("fetch");
  /** The storage panel's content (refreshStorage), or null before it was first asked for. */
  storage = $state<StorageView | null>(null);
  /**
   * Whether the browser keeps this site's storage when it runs short (navigator.storage.persist(),
   * asked at the first checkpoint); null until known.
   */
  persisted = $state<boolean | null>(null);
  private persistenceAsked = false;

  private bridge: DiskBridge | undefined;
  private emulator: V86 | undefined;
  private sharedFolder: SharedFolder | undefined;
  private sharedRefresh: ReturnType<typeof setTimeout> | undefined;
  private disk: V86DiskAdapter | undefined;
  private screen: HTMLElement | undefined;
  private serialListeners = new Set<(bytes: Uint8Array) => void>();
  private serialClearers = new Set<(banner?: string) => void>();
  private thumbnail: ThumbnailSource | undefined;
  /** The notice about a storage failure, cleared once storing works again. */
  private storageNotice: string | null = null;
  /** Checkpoint thumbnails already fetched from the worker (undefined: it has none). */
  private thumbnails = new Map<string, string | undefined>();
  private timelineRequests = 0;
  /** The request whose answer is on screen (see refreshTimeline). */
  private timelineShown = 0;
  private activity = 0;
  private activityAtLastCheckpoint = 0;
  private lastActivityAt = 0;
  /** When the first change after the last checkpoint came (what AUTO_CHECKPOINT_MS counts from). */
  private dirtySince = 0;
  /** Disk reads seen by the last automatic-checkpoint tick. */
  private readsSeen = 0;
  /** v86 has started running (keys can reach the guest); what was typed before it. */
  private started = false;
  private pendingInput = "";
  /** No automatic checkpoint before this time (see BOOT_GRACE_MS). */
  private autoAfter = 0;
  /** The checkpoints asked for, in order: each one's pause, then its store. */
  private checkpointing: Promise<unknown> = Promise.resolve();
  /**
   * Settles once every checkpoint asked for has its state taken and posted to the worker (its
   * store may go on): what a rewind to a checkpoint waits for (see rewindTo).
   */
  private statesPosted: Promise<unknown> = Promise.resolve();
  /** Counts rewinds, resets and restarts: a store that ends after one says nothing of what runs now. */
  private rewinds = 0;
  private autoTimer: ReturnType<typeof setInterval> | undefined;
  /** An automatic checkpoint is under way (the timer must not queue more). */
  private busy = false;
  private lastRewindWaitMs: number | undefined;

  private readonly route: Route;
  private readonly repo: string;

  /** Bringing a disk image file (see own-image.svelte.ts). */
  readonly ownImage: OwnImageImport;
  /** Files at timeline points: compare, browse, download, restore (see files.svelte.ts). */
  readonly files: FilesView;
  /** The guest agent on COM2, when the machine has that port (restoring a file: guest-agent.ts). */
  private agent: GuestAgent | undefined;

  constructor(private readonly startup: Startup) {
    this.route = startup.route;
    this.repo = startup.repo;
    this.ownImage = new OwnImageImport(startup.bridge.api);
    this.files = new FilesView(this, startup.bridge.api);
  }

  /** The guest agent's page end, if the machine has its serial port (whether the guest runs it: ping()). */
  get guestAgent(): GuestAgent | undefined {
    return this.agent;
  }

  /** The disk worker's API and the emulator, for the browser console and the benchmarks. */
  get debug(): {
    api: DiskBridge["api"] | undefined;
    emulator: V86 | undefined;
    disk: V86DiskAdapter | undefined;
    /** How long the last rewind, reset or restart waited for checkpoints under way (see whileStopped). */
    lastRewindWaitMs: number | undefined;
  } {
    return { api: this.bridge?.api, emulator: this.emulator, disk: this.disk, lastRewindWaitMs: this.lastRewindWaitMs };
  }

  /** Subscribes to guest serial output; `clear` empties the terminal (with an optional banner). */
  onSerial(listener: (bytes: Uint8Array) => void, clear: (banner?: string) => void): () => void {
    this.serialListeners.add(listener);
    this.serialClearers.add(clear);
    return () => {
      this.serialListeners.delete(listener);
      this.serialClearers.delete(clear);
    };
  }

  setThumbnailSource(source: ThumbnailSource): void {
    this.thumbnail = source;
  }

  /** Sends keystrokes to the guest's serial console. */
  sendSerial(text: string): void {
    this.autoAfter = 0;
    this.touch();
    // Keys typed while v86 is still starting (loading, restoring) are sent once it runs.
    if (this.started) this.emulator?.serial0_send(text);
    else this.pendingInput += text;
  }

  async start(screen: HTMLElement): Promise<void> {
    this.screen = screen;
    try {
      const { bridge, files } = this.startup;
      this.bridge = bridge;
      bridge.listen(
        (stats) => (this.transfer = stats),
        // Storage failures in the background: the machine runs on, the person must know.
        (message) => (this.notice = this.storageNotice = message),
        () => void this.refreshTimeline().catch(() => undefined),
      );
      const route = this.route;
      const carried = sessionStorage.getItem(CARRIED_NOTICE_KEY);
      if (carried) {
        sessionStorage.removeItem(CARRIED_NOTICE_KEY);
        this.notice = carried;
      }
      const info = await this.startup.opening;
      this.machine = info;
      // A machine of an image read from a URL that has changed there: said, and kept up.
      if (info.remoteUrl) void this.bridge.api.remoteCheck().then((why) => (this.remoteChanged = why));
      // A reload of "#/new/…" must come back to this machine, not make yet another one.
      if (route.kind === "image" && route.fresh) history.replaceState(null, "", machineHash(info.id));
      void this.refreshMachines();
      // The checkpoint to resume comes while the emulator is made (a first visit streams it in).
      let initialState: Promise<ArrayBuffer> | undefined;
      if (info.resume) {
        this.status = "resuming";
        initialState = this.bridge.api.restoreCheckpoint(info.resume.id).then(({ state }) => state.buffer as ArrayBuffer);
        initialState.catch(() => undefined); // awaited below
      }
      this.relay = await this.startup.relay;
      const resumed = this.launch(await files, initialState);
      this.status = initialState ? "resuming" : "booting";
      if (!initialState) this.autoAfter = performance.now() + BOOT_GRACE_MS;
      // A state that cannot be had, or that the emulator refuses, is this page's error; the
      // emulator then never starts.
      await resumed;
      if (info.resume) {
        const when = new Date(info.resume.time).toLocaleString();
        this.banner(`resumed ${info.resume.name ?? "checkpoint"} of ${when} · press Enter for a prompt`);
      }
      this.autoTimer = setInterval(() => void this.autoCheckpoint(), AUTO_TICK_MS);
      // Best effort: make the last writes durable when the tab goes away.
      addEventListener("pagehide", () => void this.bridge?.api.flush());
      await this.refreshTimeline();
    } catch (err) {
      this.fail(describe(err));
    }
  }

  /** Makes the emulator; resolves once it runs the initial state (see StartedMachine.resumed). */
  private launch(files: EmulatorFiles, initialState?: Promise<ArrayBuffer>): Promise<void> {
    const api = this.bridge!.api;
    const info = this.machine!;
    // Taken once: each property read on a Comlink proxy makes a new proxy (and registers it for
    // finalization), a cost paid per guest write otherwise.
    const read = api.read;
    const write = api.write;
    this.disk = new V86DiskAdapter(
      {
        read: (offset, length) => read(offset, length),
        write: (offset, data) => {
          this.touch();
          return write(offset, handOver(data));
        },
      },
      { size: info.size, chunkSize: info.chunkSize, onError: (err) => this.fail(describe(err)) },
    );
    const { emulator, resumed } = startMachine({
      screen: this.screen!,
      disk: this.disk,
      files,
      hardware: info.hardware,
      input: info.input,
      relay: this.relay,
      ...(initialState ? { initialState } : {}),
      onSerial: (bytes) => {
        if (this.status === "booting") this.status = "running";
        for (const l of this.serialListeners) l(bytes);
      },
      onSharedWrite: () => {
        this.touch();
        this.refreshSharedFiles();
      },
    });
    this.emulator = emulator;
    if (info.hardware.sharedFolder) this.sharedFolder = new SharedFolder(emulator as unknown as ConstructorParameters<typeof SharedFolder>[0]);
    if (info.hardware.serial1) this.agent = new GuestAgent(emulator as unknown as AgentHost);
    emulator.add_listener("emulator-started", () => {
      if (this.started) return;
      this.started = true;
      // A resumed machine is running as soon as v86 is; a cold boot once the guest speaks.
      if (this.status === "resuming") this.status = "running";
      if (this.pendingInput) this.emulator?.serial0_send(this.pendingInput);
      this.pendingInput = "";
      this.refreshSharedFiles();
    });
    return resumed;
  }

  // ── shared folder ───────────────────────────────────────────────────────────────────────────

  /** Lists the shared folder again, soon (the guest writes a file in many small steps). */
  refreshSharedFiles(): void {
    clearTimeout(this.sharedRefresh);
    this.sharedRefresh = setTimeout(() => {
      if (this.sharedFolder?.available) this.sharedFiles = this.sharedFolder.list();
    }, 200);
  }

  /** Puts files into the guest's /shared: all of them, or none if they do not fit. */
  async putFiles(files: File[]): Promise<void> {
    const folder = this.sharedFolder;
    if (!folder?.available) {
      this.notice = "This machine has no shared folder: only a .sandglass file can be opened by dropping it here.";
      return;
    }
    try {
      // Refused by size before anything is read: a drop over the limit is not read into memory.
      folder.ensureRoom(files.reduce((n, f) => n + f.size, 0));
      const incoming = await Promise.all(files.map(async (f) => ({ name: f.name, data: new Uint8Array(await f.arrayBuffer()) })));
      const written = await folder.put(incoming);
      this.touch();
      this.notice = `Added to /shared: ${written.map((p) => p.slice(1)).join(", ")}`;
    } catch (err) {
      this.notice = describe(err);
    }
    this.refreshSharedFiles();
  }

  /** A file of the shared folder as it is now, to download. */
  async sharedFile(path: string): Promise<Blob> {
    const bytes = await this.sharedFolder!.read(path);
    return new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" });
  }

  // ── checkpoints ─────────────────────────────────────────────────────────────────────────────

  /** Saves RAM, CPU, devices and the disk point; the person's button and the timer both use it. */
  checkpoint(auto = false, name?: string): Promise<CheckpointSummary | undefined> {
    // Checked when asked, not when its turn comes: a rewind asked for after it waits for it.
    if (this.status !== "running") return Promise.resolve(undefined);
    let posted!: () => void;
    const statePosted = new Promise<void>((resolve) => (posted = resolve));
    const run = this.checkpointing.then(() => this.takeCheckpoint(auto, name, posted)).finally(posted);
    this.checkpointing = run.catch(() => undefined);
    this.statesPosted = Promise.all([this.statesPosted, statePosted]);
    // The timeline shows it once stored; a rewind asked for meanwhile waits only until it is posted.
    return run.then(async (saved) => {
      if (saved) await this.showTimeline();
      return saved;
    });
  }

  /** `posted` is called once the state is on its way to the worker (see statesPosted). */
  private async takeCheckpoint(auto: boolean, name: string | undefined, posted: () => void): Promise<CheckpointSummary | undefined> {
    const api = this.bridge?.api;
    const emulator = this.emulator;
    if (!api || !emulator || this.status === "error") return undefined;
    // Not while the guest waits for a disk read: the state would lose the request, and a rewind
    // to it would hang the guest's disk for 30 s (disk-adapter.ts). Right after its answer
    // instead, before the emulator runs on; if the repository is down, taken anyway.
    await this.disk?.whenReadsAnswered(READS_ANSWERED_WAIT_MS);
    // (The machine may have failed meanwhile; TypeScript keeps the narrowing from above.)
    if ((this.status as Status) === "error") return undefined;
    // Same task as save_state(): the worker answers with the point after exactly the writes
    // v86 issued before the state was taken.
    const point = api.pointNow();
    const started = performance.now();
    const state = await emulator.save_state();
    const pauseMs = performance.now() - started;
    const activity = this.activity;
    this.activityAtLastCheckpoint = activity;
    const rewinds = this.rewinds;
    const thumbnail = this.thumbnail?.();
    try {
      // Posted before `posted()`: the worker has it before any rewind asked for meanwhile.
      const saving = api.saveCheckpoint(await point, handOver(new Uint8Array(state)), {
        auto,
        ...(thumbnail ? { thumbnail } : {}),
        ...(name ? { name } : {}),
      });
      posted();
      const saved = await saving;
      this.lastCheckpoint = { pauseMs, storedBytes: saved.storedBytes };
      if (!this.persistenceAsked) void this.askPersistence();
      // A stored checkpoint means storage works again (its disk writes were stored first).
      if (this.notice !== null && this.notice === this.storageNotice) this.notice = this.storageNotice = null;
      // After a rewind the machine runs a stored state: this store says nothing about it.
      if (rewinds === this.rewinds) this.unsaved = this.activity !== activity;
      return saved;
    } catch (err) {
      this.notice = this.storageNotice = describe(err);
      // Not in a checkpoint after all: try again, but not at once.
      if (rewinds === this.rewinds) this.activityAtLastCheckpoint = -1;
      this.autoAfter = performance.now() + AUTO_CHECKPOINT_MS;
      return undefined;
    }
  }

  private touch(): void {
    const now = performance.now();
    if (this.activity === this.activityAtLastCheckpoint) this.dirtySince = now;
    this.activity++;
    this.lastActivityAt = now;
    this.unsaved = true;
  }

  /**
   * Checkpoints pending changes as soon as the guest settles (so a reload loses nothing a person
   * waited for), and AUTO_CHECKPOINT_MS after the first change at the latest while it stays busy.
   */
  private async autoCheckpoint(): Promise<void> {
    const now = performance.now();
    // Disk reads keep the guest from counting as settled (they change nothing to save): a
    // checkpoint's pause in the middle of reading a big file would slow that read down.
    const reads = this.disk ? this.disk.counters.hits + this.disk.counters.misses : 0;
    if (reads !== this.readsSeen) {
      this.readsSeen = reads;
      this.lastActivityAt = now;
    }
    if (this.status !== "running" || this.activity === this.activityAtLastCheckpoint || this.busy) return;
    if (now < this.autoAfter) return;
    // Counted from the first change, not from the last checkpoint: a command typed after a quiet
    // spell is not interrupted by a checkpoint at its first keystroke.
    if (now - this.lastActivityAt >= SETTLE_CHECKPOINT_MS || now - this.dirtySince >= AUTO_CHECKPOINT_MS) {
      this.busy = true;
      try {
        await this.checkpoint(true);
      } finally {
        this.busy = false;
      }
    }
  }

  /** Sets a named bookmark at the disk's current point. */
  async bookmark(name: string): Promise<void> {
    await this.bridge?.api.bookmark(name);
    await this.refreshTimeline();
  }

  // ── rewinds ─────────────────────────────────────────────────────────────────────────────────

  /** Puts the whole machine back at a checkpoint; it keeps running from there. */
  async rewindTo(checkpoint: CheckpointSummary): Promise<void> {
    // A checkpoint being stored (an automatic one, a second after the guest settled) does not
    // hold the rewind up: its state is posted, and the worker lists it before the rewind looks
    // and stores it meanwhile (disk-service.ts restoreCheckpoint).
    await this.whileStopped("rewinding", "posted", async (api, emulator, disk) => {
      const { state, relaunch } = await api.restoreCheckpoint(checkpoint.id);
      // Taken in another machine shape (settings changed since): a new emulator of that shape
      // resumes it, as the page opens it.
      if (relaunch) return this.reopen();
      disk.invalidate();
      await restoreState(emulator, state.buffer as ArrayBuffer); // the guest's clock as saved (restore-state.ts)
      this.banner(`rewound to checkpoint of ${new Date(checkpoint.time).toLocaleTimeString()}`);
      this.refreshSharedFiles();
    });
  }

  /**
   * Changes the machine's settings: it is turned off and started again, cold, from its disk as it
   * is now (a change of keyboard or mouse alone resumes where it was).
   */
  async changeSettings(change: Parameters<DiskBridge["api"]["changeSettings"]>[0]): Promise<void> {
    const now = this.machine?.hardware;
    const wanted = change.hardware ?? {};
    const shapeChanged = !now || Object.entries(wanted).some(([k, v]) => now[k as keyof typeof now] !== v);
    // Only the page's keyboard or mouse: the machine resumes where it is, so it is saved first.
    if (!shapeChanged) await this.checkpoint(true);
    await this.whileStopped("restarting", "stored", async (api) => {
      await api.changeSettings(change);
      await this.reopen();
    });
  }

  /** Opens this machine again in a new page (a new emulator); never returns. */
  private async reopen(): Promise<never> {
    await this.bridge?.api.flush();
    location.reload();
    return new Promise<never>(() => undefined);
  }

  /** Puts the disk alone back at `point` and cold-boots on it, as after a power loss. */
  async rewindDisk(point: Point, label: string): Promise<void> {
    await this.whileStopped("rewinding", "stored", async (api, emulator, disk) => {
      await api.seekDisk(point);
      disk.invalidate();
      emulator.restart();
      this.autoAfter = performance.now() + BOOT_GRACE_MS;
      this.banner(`disk rewound to ${label}; cold boot`);
    });
    this.status = "booting";
  }

  /** Throws away every change to this machine and reboots it from the repository image. */
  async resetToImage(): Promise<void> {
    await this.whileStopped("resetting", "stored", async (api, emulator, disk) => {
      await api.resetToImage();
      disk.invalidate();
      emulator.restart();
      this.autoAfter = performance.now() + BOOT_GRACE_MS;
      this.banner("reset to image; cold boot");
    });
    this.status = "booting";
  }

  /**
   * Stops the machine for `action` and runs it again. `after`: what of the checkpoints asked for
   * before must be done first: their states posted (enough for a rewind to a checkpoint), or
   * everything stored (a reset, a restart or a disk-only rewind does not race a store).
   */
  private async whileStopped(
    status: Status,
    after: "posted" | "stored",
    action: (api: DiskBridge["api"], emulator: V86, disk: V86DiskAdapter) => Promise<void>,
  ): Promise<void> {
    const api = this.bridge?.api;
    const emulator = this.emulator;
    const disk = this.disk;
    if (!api || !emulator || !disk) return;
    // Busy at once (the click registered; no second action starts), even while a checkpoint ends.
    this.status = status;
    const waiting = performance.now();
    await (after === "posted" ? this.statesPosted : this.checkpointing);
    this.lastRewindWaitMs = performance.now() - waiting;
    try {
      await emulator.stop();
      await action(api, emulator, disk);
      await emulator.run();
      this.rewinds++;
      this.activityAtLastCheckpoint = this.activity;
      this.unsaved = false;
      this.status = "running";
    } catch (err) {
      this.fail(describe(err));
      return;
    }
    // The machine runs already; the timeline catches up without holding the rewind up.
    void this.showTimeline();
  }

  // ── sharing ─────────────────────────────────────────────────────────────────────────────────

  /** Checkpoints the machine as it is now and publishes that. */
  async shareNow(): Promise<void> {
    const checkpoint = await this.checkpoint(false);
    if (checkpoint) await this.shareCheckpoint(checkpoint);
  }

  /**
   * Publishes a checkpoint to the repository and shows its link. A machine of an image the person
   * brought uploads that image too: the dialog says how much and waits for confirmShare().
   */
  async shareCheckpoint(checkpoint: CheckpointSummary, retry = true, confirmed = false): Promise<void> {
    const api = this.bridge?.api;
    if (!api) return;
    const brought = this.machine?.source.repo === LOCAL_REPO;
    // Uploads go where this repository takes them, which reads may not (route.ts publishUrl).
    const uploadTo = brought || this.machine?.source.repo === this.repo ? this.startup.publish : undefined;
    this.share = { ...(this.share?.checkpoint.id === checkpoint.id ? this.share : {}), checkpoint, phase: "publishing" };
    void api.exportEstimate(checkpoint.id).then(
      (fileBytes) => {
        if (this.share?.checkpoint.id === checkpoint.id) this.share = { ...this.share, fileBytes };
      },
      () => undefined,
    );
    const token = localStorage.getItem(TOKEN_KEY) ?? undefined;
    try {
      if (brought && !confirmed) {
        const upload = await api.publishEstimate(checkpoint.id, this.startup.publish, token);
        this.share = { ...this.share, checkpoint, phase: "confirm", upload };
        return;
      }
      const result = await api.publish(checkpoint.id, { ...(token ? { token } : {}), ...(uploadTo ? { repo: uploadTo } : {}) });
      this.share = {
        ...this.share,
        checkpoint,
        phase: "published",
        link: new URL(snapshotHash(result.id), location.href).href,
        uploadedFiles: result.uploadedFiles,
        totalFiles: result.totalFiles,
        uploadedBytes: result.uploadedBytes,
      };
    } catch (err) {
      const message = describe(err);
      if (retry && message.includes("upload token")) {
        const entered = prompt("This repository needs an upload token to publish. Token:");
        if (entered) {
          localStorage.setItem(TOKEN_KEY, entered.trim());
          return this.shareCheckpoint(checkpoint, false, confirmed);
        }
      }
      this.share = { ...this.share, checkpoint, phase: "failed", error: message };
    }
  }

  /** Publishes the point the share dialog asked about (an image the person brought: uploaded too). */
  async confirmShare(): Promise<void> {
    if (this.share?.phase === "confirm") await this.shareCheckpoint(this.share.checkpoint, true, true);
  }

  /** The checkpoint as a file to download (works without a server). */
  async exportCheckpoint(checkpoint: CheckpointSummary): Promise<{ name: string; blob: Blob }> {
    const { name, bytes } = await this.bridge!.api.exportBundle(checkpoint.id);
    return { name, blob: new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }) };
  }

  /** Opens a snapshot file: keeps it in this browser and navigates to it. */
  async importFile(file: File): Promise<void> {
    try {
      const { id, label, points } = await this.bridge!.api.openBundle(new Uint8Array(await file.arrayBuffer()), this.repo);
      // A file with history holds several points: it opens at its newest, and says so.
      if (points > 1) {
        const which = `${label.name ? `“${label.name}”, ` : ""}${new Date(label.time).toLocaleString()}`;
        sessionStorage.setItem(CARRIED_NOTICE_KEY, `Opened ${file.name} at its newest point (${which}), the last of its ${points} points; the command line reads the others (npm run sandglass -- points ${file.name}).`);
      }
      location.hash = snapshotHash(id);
    } catch (err) {
      this.notice = describe(err);
    }
  }

  // ── storage ─────────────────────────────────────────────────────────────────────────────────

  /**
   * Asks the browser to keep this site's storage when it runs short (once, at the first
   * checkpoint: the person now has work here). The answer is shown in the storage panel.
   */
  private async askPersistence(): Promise<void> {
    this.persistenceAsked = true;
    try {
      this.persisted = (await navigator.storage?.persisted?.()) || ((await navigator.storage?.persist?.()) ?? false);
    } catch {
      this.persisted = false;
    }
  }

  /** Fills the storage panel: every machine's use, the image cache, the quota, the retention rule. */
  async refreshStorage(): Promise<void> {
    const api = this.bridge?.api;
    if (!api) return;
    const [report, estimate, persisted] = await Promise.all([
      api.storageReport(),
      navigator.storage?.estimate?.().catch(() => undefined),
      navigator.storage?.persisted?.().catch(() => undefined),
    ]);
    if (persisted !== undefined) this.persisted = persisted;
    this.storage = { ...report, usage: estimate?.usage ?? null, quota: estimate?.quota ?? null };
  }

  /** Thins the open machine's history now (by the rule, or `rule` to try one); says what it freed. */
  async thinNow(rule?: RetentionSetting["rule"]): Promise<SweepResult | undefined> {
    const api = this.bridge?.api;
    if (!api) return undefined;
    try {
      const result = await api.thin(rule);
      this.notice =
        result.checkpoints + result.markers === 0
          ? "Nothing to thin: the retention rule keeps every point of this machine."
          : `Thinned the history: ${result.checkpoints} checkpoints and ${result.markers} quiet points removed, ${formatBytes(Math.max(0, result.freedBytes))} freed.`;
      await Promise.all([this.refreshTimeline(), this.refreshStorage()]);
      return result;
    } catch (err) {
      this.notice = describe(err);
      return undefined;
    }
  }

  async setRetention(setting: RetentionSetting): Promise<void> {
    try {
      await this.bridge?.api.setRetention(setting);
    } catch (err) {
      this.notice = describe(err);
    }
    await this.refreshStorage();
  }

  /** Deletes a branch (and those forked from it) with its points; says what it freed. */
  async deleteBranch(id: number): Promise<void> {
    const api = this.bridge?.api;
    if (!api) return;
    try {
      const result = await api.deleteBranch(id);
      this.notice = `Deleted ${result.branches === 1 ? `branch ${id}` : `branch ${id} and ${result.branches - 1} forked from it`}: ${formatBytes(Math.max(0, result.freedBytes))} freed.`;
    } catch (err) {
      this.notice = describe(err);
    }
    await Promise.all([this.refreshTimeline(), this.storage ? this.refreshStorage() : undefined]);
  }

  async setImageCacheBudget(bytes: number): Promise<void> {
    try {
      await this.bridge?.api.setImageCacheBudget(bytes);
    } catch (err) {
      this.notice = describe(err);
    }
    await this.refreshStorage();
  }

  async clearImageCache(): Promise<void> {
    const api = this.bridge?.api;
    if (!api) return;
    const freed = await api.clearImageCache();
    this.notice = `Cleared ${formatBytes(freed.bytes)} of downloaded images (they are fetched again when needed).`;
    await this.refreshStorage();
  }

  // ── machines ────────────────────────────────────────────────────────────────────────────────

  async refreshMachines(): Promise<void> {
    if (this.bridge) this.machines = await this.bridge.api.listMachines();
  }

  async renameMachine(id: string, name: string): Promise<void> {
    try {
      await this.bridge?.api.renameMachine(id, name);
      if (this.machine?.id === id) this.machine = { ...this.machine, name: name.trim() };
    } catch (err) {
      this.notice = describe(err);
    }
    await this.refreshMachines();
  }

  async discardMachine(id: string): Promise<void> {
    try {
      await this.bridge?.api.discardMachine(id);
    } catch (err) {
      this.notice = describe(err);
    }
    await Promise.all([this.refreshMachines(), this.storage ? this.refreshStorage() : undefined]);
  }

  private banner(text: string): void {
    for (const clear of this.serialClearers) clear(text);
  }

  /** refreshTimeline for after the machine moved on: a failure is a notice, not the action's failure. */
  private showTimeline(): Promise<void> {
    return this.refreshTimeline().catch((err: unknown) => {
      this.notice = `Timeline not updated: ${describe(err)}`;
    });
  }

  async refreshTimeline(): Promise<void> {
    const api = this.bridge?.api;
    if (!api) return;
    // Refreshes overlap (a checkpoint's, a quiet point's): an older answer that arrives late must
    // not replace a newer one, or a point would vanish until the next refresh.
    const request = ++this.timelineRequests;
    const timeline = await api.timeline();
    // Thumbnails never change: only new checkpoints' are asked for.
    const unseen = timeline.checkpoints.filter((c) => !this.thumbnails.has(c.id)).map((c) => c.id);
    if (unseen.length) {
      const got = await api.thumbnails(unseen);
      for (const id of unseen) this.thumbnails.set(id, got[id]);
    }
    timeline.checkpoints = timeline.checkpoints.map((c) => {
      const thumbnail = this.thumbnails.get(c.id);
      return thumbnail ? { ...c, thumbnail } : c;
    });
    if (request < this.timelineShown) return;
    this.timelineShown = request;
    this.timeline = timeline;
  }

  /** Stops the machine and says why; nothing stored is touched. */
  fail(message: string): void {
    this.error = message;
    this.status = "error";
    clearInterval(this.autoTimer);
    void this.emulator?.stop();
  }
}
