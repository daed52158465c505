/**
 * Files at timeline points, the page's side (issue 14): picking two points to compare, the files
 * that changed between them (with text diffs of small text files), browsing the files at a point,
 * downloading a file or a folder as it was there, restoring one file into the running machine
 * through the guest agent (src/vm/guest-agent.ts) after a checkpoint to undo it by, and the
 * checkpoints a "Download as file" with history carries. The disk worker does the reading
 * (DiskService, "files at a point"); components call these actions and read the state.
 */
import type { DiskApi } from "../bridge/disk-bridge.ts";
import type { CheckpointSummary } from "../engine/disk-service.ts";
import type { FileStat, PointInfo } from "../engine/ext4/files.ts";
import type { FilesDiff, FilesListing, FilesPoint, FilesTextDiff } from "../engine/point-files.ts";
import { SHARED_FOLDER_LIMIT } from "../vm/shared-folder.ts";
import { describe } from "./format.ts";
import type { Session } from "./session.svelte.ts";
import type { TimelinePoint } from "./timeline-view.ts";

/** Bytes read from the worker per call when downloading (its limit per read). */
const READ_PIECE = 16 * 1024 * 1024;
/** Largest file downloaded (the page holds it whole before saving it). */
export const MAX_DOWNLOAD_BYTES = 1024 * 1024 * 1024;

/** Said when a restore cannot reach a guest agent. */
export const NEEDS_AGENT =
  "Restoring into the running machine needs the Sandglass guest agent, which this machine does not have " +
  "(the Debian image runs it; the small image and images you bring do not). Download the file instead and copy it in, " +
  "for example through /shared.";

/** Two points being compared, and what changed between them (A is the older). */
export interface Compared {
  a: TimelinePoint;
  b: TimelinePoint;
  phase: "loading" | "done" | "failed";
  diff?: FilesDiff;
  error?: string;
}

/** The file browser at one point. */
export interface Browsing {
  point: TimelinePoint;
  path: string;
  phase: "loading" | "done" | "failed";
  listing?: FilesListing;
  info?: PointInfo;
  error?: string;
}

/** A restore under way or just done (with the checkpoint an Undo rewinds to). */
export interface Restoring {
  path: string;
  phase: "working" | "done" | "failed";
  message: string;
  undo?: CheckpointSummary;
}

/** What "Download as file" with history would carry for a checkpoint. */
export interface History {
  checkpoint: string;
  ids: string[];
  /** At most how many bytes the file has (said before it is written). */
  bytes?: number;
  error?: string;
}

/** A timeline point as the worker names it. */
export const filesPoint = (p: TimelinePoint): FilesPoint => ({
  branch: p.point.branch,
  seq: p.point.seq,
  id: p.kind === "checkpoint" ? p.checkpoint.id : p.marker.id,
});

/** How a point is named in the files panels. */
export function pointLabel(p: TimelinePoint): string {
  const time = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" }).format(p.time);
  if (p.kind === "checkpoint") return p.checkpoint.name ? `“${p.checkpoint.name}” (${time})` : `checkpoint ${time}`;
  if (p.kind === "bookmark") return `bookmark “${p.marker.name ?? ""}” (${time})`;
  return `quiet point ${time}`;
}

/** `ls -l`'s mode column. */
export function modeString(stat: Pick<FileStat, "kind" | "mode">): string {
  const type = { file: "-", dir: "d", symlink: "l", other: "?" }[stat.kind];
  const bits = "rwxrwxrwx".split("").map((c, i) => (stat.mode & (1 << (8 - i)) ? c : "-"));
  if (stat.mode & 0o4000) bits[2] = bits[2] === "x" ? "s" : "S";
  if (stat.mode & 0o2000) bits[5] = bits[5] === "x" ? "s" : "S";
  if (stat.mode & 0o1000) bits[8] = bits[8] === "x" ? "t" : "T";
  return type + bits.join("");
}

const baseName = (path: string) => path.slice(path.lastIndexOf("/") + 1) || "root";

/** Saves bytes as a download named `name`. */
function save(parts: BlobPart[], name: string): void {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob(parts, { type: "application/octet-stream" }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

export class FilesView {
  /** Clicking a timeline point picks it for comparing instead of rewinding. */
  comparing = $state(false);
  /** Points picked for comparing (at most two; a second one compares them). */
  picked = $state<TimelinePoint[]>([]);
  compared = $state<Compared | null>(null);
  /** Text diffs of the compared points, by path, as they are asked for. */
  texts = $state<Record<string, FilesTextDiff | "loading" | { error: string }>>({});
  browsing = $state<Browsing | null>(null);
  restoring = $state<Restoring | null>(null);
  history = $state<History | null>(null);
  /** A download being prepared (its path), or why the last one failed. */
  downloading = $state<string | null>(null);
  downloadError = $state<string | null>(null);
  /** Bumped by each compare, so a slow answer for points no longer picked is dropped. */
  private compareRequest = 0;
  private browseRequest = 0;

  constructor(
    private readonly session: Session,
    private readonly api: DiskApi,
  ) {}

  // ── comparing two points ──────────────────────────────────────────────────────────────────

  toggleCompare(): void {
    this.comparing = !this.comparing;
    if (!this.comparing) this.picked = [];
  }

  isPicked(p: TimelinePoint): boolean {
    return this.picked.some((q) => q.key === p.key);
  }

  /** Picks (or unpicks) a point; with two picked, compares them. */
  pick(p: TimelinePoint): void {
    this.comparing = true;
    if (this.isPicked(p)) {
      this.picked = this.picked.filter((q) => q.key !== p.key);
      return;
    }
    this.picked = [...this.picked, p].slice(-2);
    if (this.picked.length === 2) void this.compare(this.picked[0]!, this.picked[1]!);
  }

  /** What changed from the older of two points to the newer. */
  async compare(x: TimelinePoint, y: TimelinePoint): Promise<void> {
    const [a, b] = x.time <= y.time ? [x, y] : [y, x];
    const request = ++this.compareRequest;
    this.compared = { a, b, phase: "loading" };
    this.texts = {};
    try {
      const diff = await this.api.filesDiff(filesPoint(a), filesPoint(b));
      if (request === this.compareRequest) this.compared = { a, b, phase: "done", diff };
    } catch (err) {
      if (request === this.compareRequest) this.compared = { a, b, phase: "failed", error: describe(err) };
    }
  }

  closeCompare(): void {
    this.compareRequest++;
    this.compared = null;
    this.picked = [];
    this.comparing = false;
  }

  /** The text diff of one changed path (asked for when the person opens its row). */
  async loadText(path: string): Promise<void> {
    const compared = this.compared;
    if (!compared || this.texts[path]) return;
    this.texts = { ...this.texts, [path]: "loading" };
    try {
      const text = await this.api.filesTextDiff(filesPoint(compared.a), filesPoint(compared.b), path);
      if (this.compared === compared) this.texts = { ...this.texts, [path]: text };
    } catch (err) {
      if (this.compared === compared) this.texts = { ...this.texts, [path]: { error: describe(err) } };
    }
  }

  // ── browsing one point ────────────────────────────────────────────────────────────────────

  /** Opens the file browser at a point (or another folder of it). */
  async browse(point: TimelinePoint, path = "/"): Promise<void> {
    const request = ++this.browseRequest;
    const known = this.browsing?.point.key === point.key ? this.browsing.info : undefined;
    this.browsing = { point, path, phase: "loading", ...(known ? { info: known } : {}) };
    try {
      const [listing, info] = await Promise.all([this.api.filesList(filesPoint(point), path), known ?? this.api.filesInfo(filesPoint(point))]);
      if (request === this.browseRequest) this.browsing = { point, path, phase: "done", listing, info };
    } catch (err) {
      if (request === this.browseRequest) this.browsing = { point, path, phase: "failed", error: describe(err), ...(known ? { info: known } : {}) };
    }
  }

  closeBrowser(): void {
    this.browseRequest++;
    this.browsing = null;
  }

  // ── taking files out ──────────────────────────────────────────────────────────────────────

  /** Downloads a file as it was at a point (read in pieces; a symlink's target as text). */
  async download(point: TimelinePoint, path: string): Promise<void> {
    await this.downloadWith(path, async () => {
      const stat = await this.api.filesStat(filesPoint(point), path);
      if (stat.kind === "dir") return this.zipAndSave(point, path);
      if (stat.kind === "symlink") return save([stat.target ?? ""], `${baseName(path)}.symlink.txt`);
      if (stat.kind !== "file") throw new Error(`${path} is a device, fifo or socket: it has no content to download.`);
      if (stat.size > MAX_DOWNLOAD_BYTES) throw new Error(`${path} is larger than 1 GiB: too large to download from the page.`);
      const parts: Uint8Array<ArrayBuffer>[] = [];
      for (let at = 0; at < stat.size; at += READ_PIECE) {
        parts.push((await this.api.filesRead(filesPoint(point), path, at, READ_PIECE)) as Uint8Array<ArrayBuffer>);
      }
      save(parts, baseName(path));
    });
  }

  /** Downloads a folder as it was at a point, as a zip. */
  async downloadZip(point: TimelinePoint, path: string): Promise<void> {
    await this.downloadWith(path, () => this.zipAndSave(point, path));
  }

  private async zipAndSave(point: TimelinePoint, path: string): Promise<void> {
    const zip = await this.api.filesZip(filesPoint(point), path);
    save([zip as Uint8Array<ArrayBuffer>], `${baseName(path)}.zip`);
  }

  private async downloadWith(path: string, work: () => Promise<void>): Promise<void> {
    this.downloading = path;
    this.downloadError = null;
    try {
      await work();
    } catch (err) {
      this.downloadError = `Could not download ${path}: ${describe(err)}`;
    } finally {
      this.downloading = null;
    }
  }

  // ── restoring one file into the running machine ───────────────────────────────────────────

  /**
   * Puts a file (or symlink) back as it was at `point`, in the running guest, through the guest
   * agent. A checkpoint "Before restoring <path>" comes first, so Undo (a rewind to it) takes the
   * restore back; the agent's writes reach the timeline like any other, and a checkpoint
   * "Restored <path>" marks the result.
   */
  async restore(point: TimelinePoint, path: string): Promise<void> {
    const session = this.session;
    const fail = (message: string): void => {
      this.restoring = { path, phase: "failed", message };
    };
    const agent = session.guestAgent;
    if (!agent) return fail(NEEDS_AGENT);
    if (session.status !== "running") return fail("The machine must be running to restore a file into it.");
    if (path.includes("\uFFFD")) return fail(`${path} has a name that is not UTF-8: the page cannot name it to the guest. Download it instead.`);
    this.restoring = { path, phase: "working", message: `Restoring ${path} as it was at ${pointLabel(point)}…` };
    try {
      const stat = await this.api.filesStat(filesPoint(point), path);
      if (stat.kind !== "file" && stat.kind !== "symlink") {
        return fail(`${path} is a ${stat.kind === "dir" ? "folder" : "special file"} at that point: only a file or a symbolic link can be restored (download a folder as a zip).`);
      }
      if (stat.kind === "file" && stat.size > SHARED_FOLDER_LIMIT) {
        return fail(`${path} is larger than the shared folder it travels through (64 MiB): download it instead.`);
      }
      if (!(await agent.ping())) return fail(`${NEEDS_AGENT} (No answer from it on this machine's second serial port.)`);
      const before = await session.checkpoint(false, `Before restoring ${path}`);
      if (!before) return fail("Could not take the checkpoint to come back to, so nothing was restored.");
      if (stat.kind === "symlink") {
        await agent.restoreSymlink(path, stat.target ?? "", stat);
      } else {
        const parts: Uint8Array[] = [];
        for (let at = 0; at < stat.size; at += READ_PIECE) parts.push(await this.api.filesRead(filesPoint(point), path, at, READ_PIECE));
        const data = new Uint8Array(stat.size);
        let at = 0;
        for (const p of parts) {
          data.set(p, at);
          at += p.byteLength;
        }
        await agent.restoreFile(path, data, stat);
      }
      await session.checkpoint(false, `Restored ${path}`);
      this.restoring = {
        path,
        phase: "done",
        message: `Restored ${path} as it was at ${pointLabel(point)} (the running machine has it now).`,
        undo: before,
      };
    } catch (err) {
      fail(`${path} was not restored: ${describe(err)}`);
    }
  }

  /** Takes the last restore back: the whole machine goes back to the checkpoint taken before it. */
  async undoRestore(): Promise<void> {
    const undo = this.restoring?.undo;
    if (!undo) return;
    const path = this.restoring!.path;
    this.restoring = null;
    await this.session.rewindTo(undo);
    this.session.notice = `Undid the restore of ${path}: the machine is back at the checkpoint taken just before it.`;
  }

  // ── "Download as file" with history ───────────────────────────────────────────────────────

  /** Finds the checkpoints a file with history of `checkpoint` carries, and at most how large it is. */
  async loadHistory(checkpoint: CheckpointSummary): Promise<void> {
    if (this.history?.checkpoint === checkpoint.id && !this.history.error) return;
    this.history = { checkpoint: checkpoint.id, ids: [] };
    try {
      const ids = await this.api.historyOf(checkpoint.id);
      this.history = { checkpoint: checkpoint.id, ids };
      const bytes = await this.api.exportPointsEstimate([...ids]);
      if (this.history?.checkpoint === checkpoint.id) this.history = { checkpoint: checkpoint.id, ids, bytes };
    } catch (err) {
      this.history = { checkpoint: checkpoint.id, ids: [], error: describe(err) };
    }
  }

  /** The checkpoint and the history before it, as one `.sandglass` file (bundle version 2). */
  async exportHistory(checkpoint: CheckpointSummary): Promise<{ name: string; blob: Blob }> {
    await this.loadHistory(checkpoint);
    // A plain copy: the state's proxy cannot be posted to the worker.
    const ids = this.history?.ids.length ? [...this.history.ids] : [checkpoint.id];
    const { name, bytes } = await this.api.exportPoints(ids);
    return { name, blob: new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }) };
  }
}
