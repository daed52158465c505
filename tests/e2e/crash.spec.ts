/**
 * Issue 13, part 1: the crash-kill suite. A real Chromium on a profile on disk is killed with
 * SIGKILL (its whole process group: crash-browser.ts) at seeded moments during a guest `dd` of
 * 64 MiB (the short sample: 32), a checkpoint being stored, a rewind, a branch switch, a publish,
 * an import of a `.sandglass` file, a store migration and a discard, then started again on the same
 * profile.
 *
 * Seeds. A seed (crash-plan.ts, mulberry32) fixes the order of the scenarios, the fraction of each
 * operation's duration after which the kill comes, and every choice a round makes (which
 * checkpoint to rewind to, which branch to switch to, what to sample). The operation's duration
 * is measured on this machine in the same run: the first time a scenario comes up, its operation
 * runs once unkilled and is timed. The seed and every kill (scenario, fraction, delay in ms) are
 * printed; `SANDGLASS_CRASH_SEED=<seed> npm run test:crash` repeats a run. `npm test` runs a short
 * sample: one kill per scenario, seed SHORT_SEED, sampled verification (below). `npm run
 * test:crash` (SANDGLASS_CRASH=full) runs SANDGLASS_CRASH_KILLS kills (default 32, four per
 * scenario) with a fresh seed unless one is given, and verifies everything.
 *
 * One profile holds one machine of the small busybox image (`#/i/small`: its booted snapshot
 * resumes in seconds) whose history every round adds to, so each reopen checks what all the earlier
 * kills left too; migrations use fresh profiles of their own. Before each operation the guest
 * writes a file derived from a step number, and its checksum file (crash-guest.ts).
 *
 * What "shown as saved" means, from what the page exposes, polled every 150 ms (and read after
 * every action) until the kill:
 * - A checkpoint is shown as saved once `window.sandglass.timeline.checkpoints` lists it without
 *   `pending: true`: the worker lists a checkpoint only after its IndexedDB transaction committed,
 *   except a shared snapshot's first checkpoint, which is listed when announced and stored in the
 *   background (disk-service.ts startSharedPoint), and says `pending` until then.
 * - A quiet point is shown once the timeline lists it (timeline() flushes the log first).
 * - "All changes saved" (`data-saved="true"`) with X the newest checkpoint then listed on the
 *   current branch: after a kill during an operation that only moves forward (dd, checkpoint,
 *   publish, discard), the machine must resume X or a newer checkpoint.
 *
 * After each reopen: the page the browser was on opens again (the machine's page, or the imported
 * snapshot's) and its shell answers; every checkpoint and quiet point shown before is still listed;
 * the checkpoint it resumed has its files; checkpoints are restored (the session's rewindTo, what a
 * click on a card calls; rewinds and switches in the scenarios are real clicks) and the guest's
 * files checked: exactly what the guest reported when the test took that checkpoint, and for
 * automatic ones (which may catch a command half way) every checksum file present matches its
 * file; quiet points are replayed on the host and checked with e2fsck (crash-disk.ts); the
 * machines menu lists exactly the machines in IndexedDB, each one the test made (a machine of a
 * half-imported file, a half-discarded machine: both fail), and a discarded machine has all its
 * records or none (crash-store.ts).
 * Which are restored and replayed. Checkpoints: the short sample restores one seeded checkpoint
 * shown during the round's operations and one older; the full run, of those shown during the
 * operations, every manual one, the four automatic ones shown last before the kill (the ones a
 * kill can catch being stored) and two more, plus two older ones, and at the end loads every
 * checkpoint's state through the engine (every piece there, the saved size: a restore's load,
 * without the guest) and restores in the guest every manual checkpoint not restored yet and a
 * seeded tenth of the automatic ones (a busy guest is checkpointed every 5 s: hundreds of them,
 * at ~5-30 s each in the guest). Quiet points: the short sample replays one of the round and one
 * older; the full run every one shown during the operations, two older, and at the end every one
 * not replayed yet. Checkpoints the verification itself makes (the guest runs the check command
 * after each restore, and an automatic checkpoint follows) count as older ones.
 */
import { expect, test, type Page } from "@playwright/test";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, stat, copyFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { clickPoint, linkedRepoCopy, serve, type FolderRepoServer } from "./fixtures.ts";
import { launchOn, type RunningBrowser } from "./crash-browser.ts";
import { Choices, planKills, SCENARIOS, SHORT_SEED, type Kill, type Scenario } from "./crash-plan.ts";
import { captureSerial, checkFiles, clearSerial, ddCommand, shell, stepCommand, waitFor, waitForShell, type FileCheck } from "./crash-guest.ts";
import { extractPartition, fetchChangedChunks, fsckPoint, mbrPartition, Receiver, writeBaseDisk, type Partition } from "./crash-disk.ts";
import { legacyRegionSha256, machineCounts, storeSummary, writeVersion2Store, type LegacyWrite, type MachineCounts } from "./crash-store.ts";
import { historyPoints, lanes } from "../../src/app/timeline-view.ts";
import type { Timeline } from "../../src/engine/disk-service.ts";
import type { DiskManifest } from "../../src/engine/repo-format.ts";
import { STORE_VERSION, type Point } from "../../src/engine/store-format.ts";

const FULL = process.env.SANDGLASS_CRASH === "full";
// A full run without a seed picks one; kept in the environment so that a restarted test worker
// (Playwright starts a new one after a failure) plans the same kills.
if (FULL && !process.env.SANDGLASS_CRASH_SEED) process.env.SANDGLASS_CRASH_SEED = String(Math.floor(Math.random() * 2 ** 31));
const SEED = process.env.SANDGLASS_CRASH_SEED ? Number(process.env.SANDGLASS_CRASH_SEED) : SHORT_SEED;
/**
 * The dd scenario's file: 64 MiB in the full run; the short sample writes 32 (still dozens of
 * quiet points and several automatic checkpoints while it runs), which keeps `npm test` shorter.
 */
const DD_MIB = FULL ? 64 : 32;
const KILLS = FULL ? Number(process.env.SANDGLASS_CRASH_KILLS ?? 4 * SCENARIOS.length) : SCENARIOS.length;
const CHOICES = new Choices(SEED);
const PLAN = planKills(CHOICES, KILLS);

/** Polling interval of what the page shows while an operation runs. */
const POLL_MS = 150;
/** Generous: other tests share this machine's two cores. */
const OPEN_TIMEOUT_MS = 300_000;
const COMMAND_TIMEOUT_MS = 900_000;

const log = (...parts: unknown[]) => console.log("crash:", ...parts);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ── what the page shows ─────────────────────────────────────────────────────────────────────────

interface CheckpointView {
  id: string;
  branch: number;
  seq: number;
  time: number;
  stateBytes: number;
  auto: boolean;
  name?: string;
  pending?: boolean;
}

interface QuietView {
  id: string;
  branch: number;
  seq: number;
  time: number;
}

interface PageView {
  href: string;
  machine: string | null;
  source: string | null;
  status: string;
  error: string | null;
  /** The "All changes saved" indicator (null when not drawn). */
  saved: boolean | null;
  now: Point | null;
  resume: string | null;
  checkpoints: CheckpointView[];
  quiet: QuietView[];
}

/** Reads what the page shows: the session's machine and timeline, and the header's indicators. */
function view(page: Page): Promise<PageView> {
  return page.evaluate(() => {
    type Session = {
      machine: { id: string; source: { name: string }; resume: { id: string } | null } | null;
      status: string;
      timeline: {
        now: { branch: number; seq: number };
        checkpoints: (CheckpointView & Record<string, unknown>)[];
        markers: { id: string; kind: string; branch: number; seq: number; time: number }[];
      } | null;
    };
    const s = (window as unknown as { sandglass?: Session | null }).sandglass;
    const saved = document.querySelector('[data-testid="saved"]')?.getAttribute("data-saved");
    const error = document.querySelector('[data-testid="error"]')?.textContent ?? null;
    const t = s?.timeline;
    return {
      href: location.href,
      machine: s?.machine?.id ?? null,
      source: s?.machine?.source.name ?? null,
      status: s?.status ?? "none",
      error,
      saved: saved === undefined || saved === null ? null : saved === "true",
      now: t ? { branch: t.now.branch, seq: t.now.seq } : null,
      resume: s?.machine?.resume?.id ?? null,
      checkpoints: (t?.checkpoints ?? []).map((c) => ({
        id: c.id,
        branch: c.branch,
        seq: c.seq,
        time: c.time,
        stateBytes: c.stateBytes,
        auto: c.auto,
        ...(c.name ? { name: c.name } : {}),
        ...(c.pending === true ? { pending: true } : {}),
      })),
      quiet: (t?.markers ?? []).filter((m) => m.kind === "quiet").map((m) => ({ id: m.id, branch: m.branch, seq: m.seq, time: m.time })),
    };
  });
}

/** The timeline as the page has it, without thumbnails or activity (for timeline-view.ts). */
function timelineOf(page: Page): Promise<Timeline> {
  return page.evaluate(() => {
    const t = (window as unknown as { sandglass: { timeline: Timeline } }).sandglass.timeline;
    return JSON.parse(JSON.stringify({ ...t, activity: [], checkpoints: t.checkpoints.map(({ thumbnail: _t, ...c }) => c) })) as Timeline;
  });
}

/** Whether the page showed checkpoint `c` as saved (see the header). */
function shownSaved(c: CheckpointView): boolean {
  return c.pending !== true;
}

/** A point the page showed, and when: in which round, during an operation or during a check. */
interface Seen<T> {
  item: T;
  round: number;
  during: "op" | "check";
}

/** Operations after which the machine is at the newest point it had: "All changes saved" must hold. */
const FORWARD: ReadonlySet<Scenario> = new Set(["dd", "checkpoint", "publish", "discard"]);

// ── one profile, one machine, many kills ────────────────────────────────────────────────────────

class Lab {
  private b: RunningBrowser | undefined;
  page!: Page;
  main = "";
  /** The kill whose round this is (0: setting up) and what is happening. */
  private round = 0;
  private during: "op" | "check" = "check";
  /** When this test began (ms since the epoch): the repository check looks at what came after. */
  private readonly began = Date.now();
  /**
   * The guest's files as last read, and when (page clock): given to manual checkpoints taken since.
   * Cleared while a command changes them.
   */
  private expectation: { files: FileCheck; since: number } | undefined;
  /** What the guest reported when the test took each of its checkpoints. */
  private readonly expectations = new Map<string, FileCheck>();
  /** Rounds that wrote the dd file: their checkpoints' checks read it back. */
  private readonly bigRounds = new Set<number>();
  readonly checkpoints = new Map<string, Seen<CheckpointView>>();
  readonly quiet = new Map<string, Seen<QuietView>>();
  readonly restored = new Set<string>();
  readonly replayed = new Set<string>();
  /** The newest view of the page (and the one just before the kill). */
  private last: PageView | undefined;
  /** Machines besides the main one, for discards: made fresh, or imported. */
  private victims: string[] = [];
  /** Machines that must be listed, with why. */
  private readonly alive = new Map<string, string>();
  /** Bundles exported and imported: snapshot name → the files of the checkpoint it was made from. */
  private readonly bundles = new Map<string, FileCheck>();
  /** A discard the kill may have interrupted: the machine and its records before. */
  private discarding: { id: string; before: MachineCounts } | undefined;
  private step = 0;
  readonly durations = new Map<Scenario, number>();
  private base: { path: string; partition: Partition; chunkSize: number } | undefined;
  readonly failures: string[] = [];
  readonly stats = { restores: 0, replays: 0, restoreMs: 0, replayMs: 0, reopenMs: 0 };

  constructor(
    private readonly repo: FolderRepoServer,
    private readonly receiver: Receiver,
    private readonly work: string,
    private readonly profile: string,
  ) {}

  get mainUrl(): string {
    return `${this.repo.url}#/m/${this.main}`;
  }

  async launch(): Promise<void> {
    this.b = await launchOn(this.profile);
    this.page = this.b.page;
  }

  async close(): Promise<void> {
    await this.b?.kill();
    this.b = undefined;
  }

  /** Goes to `url` (through about:blank: a new hash reloads the app) and waits for the shell. */
  async open(url: string): Promise<PageView> {
    this.expectation = undefined;
    await this.page.goto("about:blank");
    await this.page.goto(url);
    await captureSerial(this.page);
    await expect
      .poll(
        async () => {
          const v = await view(this.page);
          if (v.error) throw new Error(`the page says: ${v.error}`);
          return v.status;
        },
        { timeout: OPEN_TIMEOUT_MS, intervals: [200] },
      )
      .toBe("running");
    await waitForShell(this.page, OPEN_TIMEOUT_MS);
    return this.observe();
  }

  /** Reads what the page shows; points of the main machine shown as saved are kept. */
  async observe(): Promise<PageView> {
    const v = await view(this.page);
    this.last = v;
    if (v.machine !== this.main) return v;
    for (const c of v.checkpoints) {
      if (this.checkpoints.has(c.id) || !shownSaved(c)) continue;
      this.checkpoints.set(c.id, { item: c, round: this.round, during: this.during });
      // A checkpoint the test took (manual, unnamed: not a shared point) after it read the files.
      const expectation = this.expectation;
      if (!c.auto && !c.name && expectation && c.time >= expectation.since && !this.expectations.has(c.id)) this.expectations.set(c.id, expectation.files);
    }
    for (const q of v.quiet) if (!this.quiet.has(q.id)) this.quiet.set(q.id, { item: q, round: this.round, during: this.during });
    return v;
  }

  /** Asks the page to list its timeline again, then observes it. */
  async refresh(): Promise<PageView> {
    await this.page.evaluate(() => (window as unknown as { sandglass: { refreshTimeline(): Promise<void> } }).sandglass.refreshTimeline());
    return this.observe();
  }

  /** Observes every POLL_MS until stopped (a kill ends the page mid-read: that read is lost). */
  private poll(): () => Promise<void> {
    let on = true;
    const loop = (async () => {
      while (on) {
        await this.observe().catch(() => undefined);
        await sleep(POLL_MS);
      }
    })();
    return () => {
      on = false;
      return loop;
    };
  }

  // ── the guest ─────────────────────────────────────────────────────────────────────────────────

  /** Writes the next step's file; returns the guest's files after it. */
  async writeStep(): Promise<FileCheck> {
    this.expectation = undefined;
    await shell(this.page, stepCommand(++this.step), undefined, COMMAND_TIMEOUT_MS);
    return this.expectNow();
  }

  /** The guest's files now: what a checkpoint the test takes next must give back. */
  async expectNow(big = false): Promise<FileCheck> {
    const since = await this.page.evaluate(() => Date.now());
    const files = await checkFiles(this.page, big, COMMAND_TIMEOUT_MS);
    if (!files.good) this.fail(`the running guest's files do not match their checksums: ${JSON.stringify(files)}`);
    this.expectation = { files, since };
    return files;
  }

  /** Clicks "Checkpoint"; resolves with its id once the timeline lists it. */
  async clickCheckpoint(): Promise<string> {
    const manual = async () => (await view(this.page)).checkpoints.filter((c) => !c.auto).map((c) => c.id);
    const known = new Set(await manual());
    await this.page.getByRole("button", { name: "Checkpoint" }).click();
    let id = "";
    await expect
      .poll(async () => (id = (await manual()).find((i) => !known.has(i)) ?? ""), { timeout: COMMAND_TIMEOUT_MS, intervals: [100] })
      .not.toBe("");
    return id;
  }

  /** Runs an operation with the page observed throughout; returns how long it took. */
  async timed(operation: () => Promise<unknown>): Promise<number> {
    this.during = "op";
    const stop = this.poll();
    const started = Date.now();
    try {
      await operation();
      return Date.now() - started;
    } finally {
      await stop();
      await this.observe().catch(() => undefined);
      this.during = "check";
    }
  }

  /**
   * Starts `operation` and kills the browser `kill.fraction` of the scenario's measured duration
   * later; returns the delay.
   */
  async killDuring(kill: Kill, operation: () => Promise<unknown>): Promise<string> {
    const measured = this.durations.get(kill.scenario)!;
    const delay = Math.round(kill.fraction * measured);
    this.during = "op";
    const stop = this.poll();
    const started = Date.now();
    let ended = 0;
    const running = operation().then(
      () => (ended = Date.now() - started),
      () => undefined,
    );
    await sleep(delay);
    await this.b!.kill();
    const deadAt = Date.now() - started;
    this.b = undefined;
    await stop();
    await running;
    this.during = "check";
    const what = ended ? `the operation had ended after ${ended} ms` : "during the operation";
    const line = `kill #${kill.n} ${kill.scenario}: ${kill.fraction.toFixed(3)} × ${measured} ms measured = ${delay} ms (every process gone at ${deadAt} ms, ${what})`;
    log(line);
    return line;
  }

  fail(message: string): void {
    const line = `round ${this.round} (seed ${SEED}): ${message}`;
    log(`FAILURE ${line}`);
    this.failures.push(line);
  }

  // ── setting up ────────────────────────────────────────────────────────────────────────────────

  /** The main machine: the small image's booted snapshot, a first step and checkpoint. */
  async setUp(): Promise<void> {
    await this.launch();
    const v = await this.open(`${this.repo.url}#/i/small`);
    this.main = v.machine!;
    this.alive.set(this.main, "the main machine");
    await this.keepEverything();
    // Its first checkpoint is the booted snapshot's state: no files of ours yet.
    const first = (await this.refresh()).checkpoints[0];
    if (first) this.expectations.set(first.id, { list: "", digest: "none", good: true });
    await this.writeStep();
    this.during = "op";
    await this.clickCheckpoint();
    await this.observe();
    this.during = "check";
    await this.buildBase();
  }

  /**
   * Turns automatic thinning off (retention.ts: it removes older automatic checkpoints and quiet
   * points by design, so a point gone would not tell a loss). Builds without thinning have no such
   * setting: nothing to turn off.
   */
  private async keepEverything(): Promise<void> {
    const answer = await this.page.evaluate(async () => {
      type Api = { setRetention(s: { rule: { tiers: never[] }; auto: boolean }): Promise<void> };
      const api = (window as unknown as { sandglass: { debug: { api: Api } } }).sandglass.debug.api;
      try {
        await api.setRetention({ rule: { tiers: [] }, auto: false });
        return "automatic thinning off";
      } catch (err) {
        return `no thinning to turn off (${String(err).slice(0, 80)})`;
      }
    });
    log(`retention: ${answer}`);
  }

  /** The main machine's base disk and its root partition, rebuilt from the repository folder. */
  private async buildBase(): Promise<void> {
    const source = await this.page.evaluate(() => {
      const s = (window as unknown as { sandglass: { machine: { source: { kind: string; name: string } } } }).sandglass;
      return { kind: s.machine.source.kind, name: s.machine.source.name };
    });
    const manifest = JSON.parse(
      await readFile(join(this.repo.root, source.kind === "image" ? "images" : "snapshots", `${source.name}.json`), "utf8"),
    ) as DiskManifest;
    const disk = join(this.work, "base.img");
    await writeBaseDisk(this.repo.root, manifest, disk);
    const partition = await mbrPartition(disk, 2);
    const path = join(this.work, "base-p2.img");
    await extractPartition(disk, partition, path);
    await rm(disk);
    this.base = { path, partition, chunkSize: manifest.chunkSize };
  }

  // ── scenarios ─────────────────────────────────────────────────────────────────────────────────

  async play(kill: Kill): Promise<string> {
    this.round = kill.n;
    const choices = CHOICES.derive(kill.n);
    const calibrate = !this.durations.has(kill.scenario);
    const measure = async (operation: () => Promise<unknown>) => {
      const ms = await this.timed(operation);
      this.durations.set(kill.scenario, ms);
      log(`${kill.scenario}: the operation took ${ms} ms unkilled`);
    };
    switch (kill.scenario) {
      case "dd": {
        this.bigRounds.add(kill.n);
        const dd = () => {
          this.expectation = undefined;
          return shell(this.page, ddCommand(++this.step, DD_MIB), undefined, COMMAND_TIMEOUT_MS);
        };
        if (calibrate) await measure(dd);
        await this.expectNow(true);
        return this.killDuring(kill, dd);
      }
      case "checkpoint": {
        // A checkpoint with much to store: 24 MiB of the guest's page cache refilled from its disk.
        const prepare = async () => {
          await this.writeStep();
          await shell(this.page, "dd if=/dev/sda2 of=/dev/null bs=1M count=24 2>/dev/null", undefined, COMMAND_TIMEOUT_MS);
        };
        if (calibrate) {
          await prepare();
          await measure(() => this.clickCheckpoint());
        }
        await prepare();
        return this.killDuring(kill, () => this.clickCheckpoint());
      }
      case "rewind": {
        const target = async () => {
          let points = await this.checkpointsBehind();
          if (points.length === 0) {
            // At the start of history (a rewind to its first point): one step and checkpoint more.
            await this.writeStep();
            await this.clickCheckpoint();
            points = await this.checkpointsBehind();
          }
          return points[choices.index(points.length)]!;
        };
        if (calibrate) {
          const id = await target();
          await measure(() => this.clickRewind(`[data-testid="point"][data-id="${id}"]`));
          await waitForShell(this.page);
        }
        const id = await target();
        log(`rewind: to checkpoint ${id}`);
        return this.killDuring(kill, () => this.clickRewind(`[data-testid="point"][data-id="${id}"]`));
      }
      case "switch": {
        const target = async () => {
          let others = lanes(await timelineOf(this.page), 400).lanes.filter((l) => !l.current && l.newestCheckpoint);
          if (others.length === 0) {
            // Make a second branch: back to an older checkpoint, and a write there.
            let older = await this.checkpointsBehind();
            if (older.length === 0) {
              await this.writeStep();
              await this.clickCheckpoint();
              older = await this.checkpointsBehind();
            }
            await this.clickRewind(`[data-testid="point"][data-id="${older[choices.index(older.length)]!}"]`);
            await waitForShell(this.page);
            await this.writeStep();
            await this.clickCheckpoint();
            others = lanes(await timelineOf(this.page), 400).lanes.filter((l) => !l.current && l.newestCheckpoint);
          }
          return others[choices.index(others.length)]!.branch.id;
        };
        const button = (branch: number) => `[data-testid="branch"][data-branch="${branch}"] [data-testid="switch-branch"]`;
        if (calibrate) {
          const branch = await target();
          await measure(() => this.clickRewind(button(branch), false));
          await waitForShell(this.page);
        }
        const branch = await target();
        log(`switch: to branch ${branch}`);
        return this.killDuring(kill, () => this.clickRewind(button(branch), false));
      }
      case "publish": {
        if (calibrate) {
          await this.writeStep();
          await measure(() => this.publish());
          await this.page.getByTestId("share-dialog").getByRole("button", { name: "Close" }).click();
        }
        await this.writeStep();
        return this.killDuring(kill, () => this.publish());
      }
      case "import": {
        if (calibrate) {
          const bundle = await this.exportBundle();
          await measure(() => this.importBundle(bundle));
          await this.checkImported(bundle.name);
          await this.open(this.mainUrl);
        }
        const bundle = await this.exportBundle();
        return this.killDuring(kill, () => this.importBundle(bundle));
      }
      case "discard": {
        await this.makeVictims((calibrate ? 2 : 1) - this.victims.length);
        if (calibrate) await measure(() => this.discard(this.victims[0]!));
        const victim = this.victims[0]!;
        this.discarding = { id: victim, before: await machineCounts(this.page, victim) };
        log(`discard: machine ${victim}, ${JSON.stringify(this.discarding.before)}`);
        return this.killDuring(kill, () => this.discard(victim));
      }
      case "migration":
        throw new Error("migrations run in their own profiles (see the second test)");
    }
  }

  /** Ids of the checkpoints in the current history other than the one the machine is at. */
  async checkpointsBehind(): Promise<string[]> {
    const t = await timelineOf(this.page);
    return historyPoints(t)
      .filter((p) => p.kind === "checkpoint" && !(p.point.branch === t.now.branch && p.point.seq === t.now.seq))
      .map((p) => p.key.slice(2));
  }

  /** Clicks what rewinds the machine (a checkpoint card, or a branch's switch button); waits until it runs there. */
  async clickRewind(selector: string, onStrip = true): Promise<void> {
    this.expectation = undefined;
    await clearSerial(this.page);
    if (onStrip) await clickPoint(this.page, selector);
    else await this.page.locator(selector).click();
    await waitFor(this.page, /\[banner\] rewound to/, COMMAND_TIMEOUT_MS);
    await expect(this.page.getByTestId("status")).toHaveAttribute("data-status", "running", { timeout: COMMAND_TIMEOUT_MS });
  }

  /** Publishes the machine as it is now ("Share"); resolves when the link is shown. */
  async publish(): Promise<void> {
    await this.page.getByTestId("share-now").click();
    await expect(this.page.getByTestId("share-dialog")).toHaveAttribute("data-phase", "published", { timeout: COMMAND_TIMEOUT_MS });
  }

  /**
   * A `.sandglass` file of a checkpoint taken now (after a new step), through the page's engine
   * (what "Download as file" calls), received on the loopback receiver.
   */
  async exportBundle(): Promise<{ name: string; path: string }> {
    const files = await this.writeStep();
    this.during = "op";
    const id = await this.clickCheckpoint();
    await this.observe();
    this.during = "check";
    const name = await this.page.evaluate(
      async ({ id, url }) => {
        type Api = { exportBundle(id: string): Promise<{ name: string; bytes: Uint8Array }> };
        const api = (window as unknown as { sandglass: { debug: { api: Api } } }).sandglass.debug.api;
        const { name, bytes } = await api.exportBundle(id);
        const response = await fetch(`${url}/file/${name}`, { method: "POST", body: bytes as Uint8Array<ArrayBuffer> });
        if (!response.ok) throw new Error(`receiver: ${response.status}`);
        return name;
      },
      { id, url: this.receiver.url },
    );
    const snapshot = name.replace(/\.sandglass$/, "");
    this.bundles.set(snapshot, files);
    log(`import: bundle ${name} (${(await stat(this.receiver.filePath(name))).size} bytes) of checkpoint ${id}`);
    return { name: snapshot, path: this.receiver.filePath(name) };
  }

  /**
   * Opens a bundle with "Open file…"; resolves once the page runs the bundle's machine and that
   * machine is stored. (Its first checkpoint, which the worker cuts a few seconds after the
   * resume, comes after that: a kill then is checked like any other, the machine reopening with
   * the file's files.)
   */
  async importBundle(bundle: { name: string; path: string }): Promise<void> {
    const started = Date.now();
    const phases: string[] = [];
    const file = basename(bundle.path);
    // Handed to the page's file input from inside the page, as a chosen file arrives: this
    // browser is driven over CDP, and setInputFiles sent the 21 MB through it in ~27 s, so a kill
    // "during the import" landed before the page had the file (measured 2026-12-07).
    await this.page.evaluate(
      async ({ url, name }) => {
        const response = await fetch(url);
        if (!response.ok) throw new Error(`receiver: ${response.status}`);
        const files = new DataTransfer();
        files.items.add(new File([await response.blob()], name));
        const input = document.querySelector<HTMLInputElement>('[data-testid="file-input"]')!;
        input.files = files.files;
        input.dispatchEvent(new Event("input", { bubbles: true }));
        input.dispatchEvent(new Event("change", { bubbles: true }));
      },
      { url: this.receiver.fileUrl(file), name: file },
    );
    phases.push(`file given ${Date.now() - started} ms`);
    await expect
      .poll(
        async () => {
          // A page busy importing may not answer these reads; a killed one never will (stop then).
          try {
            const v = await view(this.page);
            if (v.source === bundle.name && phases.length === 1) phases.push(`page on its machine (${v.status}) ${Date.now() - started} ms`);
            if (v.source !== bundle.name || v.status !== "running" || !v.machine) return false;
            return (await machineCounts(this.page, v.machine)).machines === 1;
          } catch (err) {
            if (this.page.isClosed()) throw err;
            return false;
          }
        },
        { timeout: COMMAND_TIMEOUT_MS, intervals: [200] },
      )
      .toBe(true);
    log(`import: ${phases.join(", ")}, running and stored ${Date.now() - started} ms`);
  }

  /** On the page of an imported snapshot: it resumed the exported checkpoint, files and all. */
  async checkImported(snapshot: string): Promise<void> {
    // Already open on this page (an import ends there): its shell is waited for, not reopened.
    await captureSerial(this.page);
    await waitForShell(this.page, OPEN_TIMEOUT_MS);
    const v = await this.observe();
    if (v.source !== snapshot) throw new Error(`expected the machine of imported snapshot ${snapshot}, the page shows ${JSON.stringify(v)}`);
    const files = await checkFiles(this.page, false, COMMAND_TIMEOUT_MS);
    const expected = this.bundles.get(snapshot);
    if (!expected || files.digest !== expected.digest || files.list !== expected.list || !files.good) {
      this.fail(`the machine of imported snapshot ${snapshot} has other files: ${JSON.stringify(files)}, expected ${JSON.stringify(expected)}`);
    }
    this.alive.set(v.machine!, `imported from ${snapshot}`);
    if (!this.victims.includes(v.machine!)) this.victims.push(v.machine!);
  }

  /** Machines to discard: new ones of the image, each with a step written and saved. */
  async makeVictims(count: number): Promise<void> {
    if (count <= 0) return;
    for (let i = 0; i < count; i++) {
      const v = await this.open(`${this.repo.url}#/new/small`);
      await this.writeStep();
      await expect(this.page.getByTestId("saved")).toHaveAttribute("data-saved", "true", { timeout: COMMAND_TIMEOUT_MS });
      this.victims.push(v.machine!);
      this.alive.set(v.machine!, "a machine made to be discarded");
    }
    await this.open(this.mainUrl);
  }

  /** Discards a machine from the machines menu; resolves once it is gone from the list. */
  async discard(id: string): Promise<void> {
    if (!(await this.page.getByTestId("machines").isVisible())) await this.page.getByTestId("machines-button").click();
    this.page.once("dialog", (d) => void d.accept());
    await this.page.locator(`[data-testid="machine"][data-id="${id}"] [data-testid="discard"]`).click();
    await expect(this.page.locator(`[data-testid="machine"][data-id="${id}"]`)).toHaveCount(0, { timeout: COMMAND_TIMEOUT_MS });
    this.victims = this.victims.filter((v) => v !== id);
    this.alive.delete(id);
    await this.page.getByTestId("machines-button").click();
  }

  // ── after a kill ──────────────────────────────────────────────────────────────────────────────

  async verify(kill: Kill): Promise<void> {
    const before = this.last;
    const started = Date.now();
    await this.launch();
    // The tab the browser had: the machine's page, or the imported snapshot's.
    const url = before?.href.startsWith(this.repo.url) ? before.href : this.mainUrl;
    let v: PageView;
    try {
      v = await this.open(url);
    } catch (err) {
      throw new Error(`kill #${kill.n} (${kill.scenario}, seed ${SEED}): ${url} does not open again: ${String(err)}`, { cause: err });
    }
    this.stats.reopenMs += Date.now() - started;
    if (v.machine !== this.main) {
      if (!v.source || !this.bundles.has(v.source)) this.fail(`the browser reopened a machine the test never made: ${JSON.stringify(v)}`);
      else await this.checkImported(v.source);
      v = await this.open(this.mainUrl);
    }
    v = await this.refresh();
    const choices = CHOICES.derive(1000 + kill.n);

    // Everything shown before is still listed.
    const listed = new Set(v.checkpoints.map((c) => c.id));
    // (Reported once: they are forgotten, so later rounds neither report nor restore them again.)
    for (const [id, seen] of this.checkpoints) {
      if (listed.has(id)) continue;
      this.fail(`checkpoint ${id} (${seen.item.auto ? "automatic" : "manual"}, shown in round ${seen.round}) is gone`);
      this.checkpoints.delete(id);
    }
    const quietListed = new Set(v.quiet.map((q) => q.id));
    for (const [id, seen] of this.quiet) {
      if (quietListed.has(id)) continue;
      this.fail(`quiet point ${id} (shown in round ${seen.round}) is gone`);
      this.quiet.delete(id);
    }

    // "All changes saved" before the kill: the machine resumes that checkpoint or a newer one.
    if (FORWARD.has(kill.scenario) && before?.machine === this.main && before.saved && before.now) {
      const now = before.now;
      // Newest as the page orders them: the latest write seen, then the latest taken.
      const later = (a: { seq: number; time: number }, b: { seq: number; time: number }) => b.seq - a.seq || b.time - a.time;
      const newest = before.checkpoints.filter((c) => c.branch === now.branch && c.seq <= now.seq).sort(later)[0];
      const resumed = v.checkpoints.find((c) => c.id === v.resume);
      if (newest && (!resumed || later(resumed, newest) > 0)) {
        this.fail(`"All changes saved" showed with checkpoint ${newest.id} newest, but the machine resumed ${v.resume ?? "nothing"}`);
      }
    }

    // The checkpoint it resumed has its files.
    if (v.resume) await this.checkCheckpoint(v.resume, await checkFiles(this.page, this.bigRounds.has(kill.n), COMMAND_TIMEOUT_MS), "resumed");
    else this.fail("the main machine resumed no checkpoint");

    await this.checkMachines(kill);
    await this.restoreSome(choices, (s) => s.round === kill.n && s.during === "op");
    await this.replaySome(choices, (s) => s.round === kill.n && s.during === "op");
    if (kill.scenario === "publish") await this.checkRepository();
  }

  /** Compares a checkpoint's files with what is known of it. */
  private async checkCheckpoint(id: string, files: FileCheck, how: string): Promise<void> {
    const expected = this.expectations.get(id);
    if (expected) {
      if (files.digest !== expected.digest || files.list !== expected.list || !files.good) {
        this.fail(`checkpoint ${id} (${how}) has other files: ${JSON.stringify(files)}, expected ${JSON.stringify(expected)}`);
      }
    } else {
      const strange = files.list.split(" ").filter((f) => f && !/^(\d+|big)\.md5$/.test(f));
      if (!files.good || strange.length) this.fail(`checkpoint ${id} (${how}, automatic) has damaged files: ${JSON.stringify(files)}`);
    }
  }

  /**
   * The machines menu lists exactly what IndexedDB holds, each one a machine the test made; a
   * machine being discarded at the kill is there whole or not at all.
   */
  private async checkMachines(kill: Kill): Promise<void> {
    await this.page.getByTestId("machines-button").click();
    await expect(this.page.getByTestId("machines")).toBeVisible();
    await expect.poll(() => this.page.getByTestId("machine").count()).toBeGreaterThan(0);
    const menu = (await this.page.getByTestId("machine").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-id") ?? ""))).sort();
    await this.page.getByTestId("machines-button").click();
    const summary = (await storeSummary(this.page))!;
    const stored = [...summary.machines].sort();
    if (JSON.stringify(menu) !== JSON.stringify(stored)) this.fail(`the machines menu lists ${menu.join(", ")} but IndexedDB holds ${stored.join(", ")}`);

    const discarding = this.discarding;
    this.discarding = undefined;
    if (discarding) {
      const after = await machineCounts(this.page, discarding.id);
      const whole = JSON.stringify(after) === JSON.stringify(discarding.before);
      const gone = Object.values(after).every((n) => n === 0);
      if (gone) {
        this.alive.delete(discarding.id);
        this.victims = this.victims.filter((m) => m !== discarding.id);
      }
      log(`discard: machine ${discarding.id} is ${whole ? "whole" : gone ? "gone" : "HALF THERE"}: ${JSON.stringify(after)}`);
      if (!whole && !gone) this.fail(`the discarded machine ${discarding.id} is half there: ${JSON.stringify(after)}, before ${JSON.stringify(discarding.before)}`);
    }
    for (const id of stored) {
      if (this.alive.has(id)) continue;
      // A machine of a file the kill interrupted the import of: it must open with the file's files.
      const source = await this.page.evaluate(
        (id) =>
          (window as unknown as { sandglass: { machines: { id: string; source: { name: string } }[] } }).sandglass.machines.find((m) => m.id === id)?.source
            .name,
        id,
      );
      if (kill.scenario === "import" && source && this.bundles.has(source)) {
        await this.open(`${this.repo.url}#/m/${id}`);
        await this.checkImported(source);
        await this.open(this.mainUrl);
      } else {
        this.fail(`a machine the test never made is listed: ${id} (${source ?? "unknown source"})`);
      }
    }
    for (const [id, why] of this.alive) if (!stored.includes(id)) this.fail(`${why} (${id}) is not listed any more`);
    log(`machines: ${stored.length} listed and stored; ${summary.orphanChunks} chunks no manifest names`);
  }

  /** Restores checkpoints (see the header for which) and checks their files. */
  /**
   * Restores checkpoints and checks their files: of those `fresh` (shown during the round's
   * operations), the short sample takes one, the full run the manual ones, the four shown last
   * before the kill and two more; then one older (the full run: two), all seeded.
   */
  async restoreSome(choices: Choices, fresh: (s: Seen<CheckpointView>) => boolean): Promise<void> {
    const shown = [...this.checkpoints.values()];
    const now = shown.filter(fresh);
    const older = shown.filter((s) => !fresh(s));
    let picked: Seen<CheckpointView>[];
    if (!FULL) picked = [...choices.sample(now, 1), ...choices.sample(older, 1)];
    else {
      const last = now.filter((s) => s.item.auto).sort((a, b) => a.item.time - b.item.time).slice(-4);
      const chosen = new Set([...now.filter((s) => !s.item.auto), ...last]);
      picked = [...chosen, ...choices.sample(now.filter((s) => !chosen.has(s)), 2), ...choices.sample(older, 2)];
    }
    await this.restore(picked);
  }

  /** Restores each checkpoint in the guest (the session's rewindTo) and checks its files. */
  async restore(picked: Seen<CheckpointView>[]): Promise<void> {
    this.expectation = undefined;
    for (const seen of picked) {
      const id = seen.item.id;
      const started = Date.now();
      const error = await this.page.evaluate(async (id) => {
        type S = { timeline: { checkpoints: { id: string }[] }; rewindTo(c: unknown): Promise<void>; error: string | null };
        const s = (window as unknown as { sandglass: S }).sandglass;
        const c = s.timeline.checkpoints.find((c) => c.id === id);
        if (!c) return "not listed";
        await s.rewindTo(c);
        return s.error;
      }, id);
      if (error) {
        this.fail(`checkpoint ${id} does not restore: ${error}`);
        throw new Error(this.failures.join("\n"));
      }
      await waitForShell(this.page, OPEN_TIMEOUT_MS);
      const big = this.bigRounds.has(seen.round);
      await this.checkCheckpoint(id, await checkFiles(this.page, big, COMMAND_TIMEOUT_MS), `restored${big ? `, ${DD_MIB} MiB file read` : ""}`);
      this.restored.add(id);
      this.stats.restores++;
      this.stats.restoreMs += Date.now() - started;
      await this.observe();
    }
    log(`restored ${picked.length} checkpoints: ${picked.map((s) => `${s.item.id.slice(0, 8)}${s.item.auto ? "" : "*"}`).join(" ")}`);
  }

  /** Replays the write log to quiet points on the host and checks the file system there. */
  /**
   * Replays quiet points: of those `fresh`, the short sample takes one, the full run all; then
   * one older (the full run: two), seeded.
   */
  async replaySome(choices: Choices, fresh: (s: Seen<QuietView>) => boolean): Promise<void> {
    const shown = [...this.quiet.values()];
    const now = shown.filter(fresh);
    const older = shown.filter((s) => !fresh(s));
    await this.replay([...(FULL ? now : choices.sample(now, 1)), ...choices.sample(older, FULL ? 2 : 1)]);
  }

  /** Replays the write log to each quiet point on the host and checks the file system there. */
  async replay(picked: Seen<QuietView>[]): Promise<void> {
    const base = this.base!;
    let sent = 0;
    for (const seen of picked) {
      const started = Date.now();
      const point = { branch: seen.item.branch, seq: seen.item.seq };
      const chunks = await fetchChangedChunks(this.page, point, this.receiver, base.chunkSize);
      const image = join(this.work, "replayed-p2.img");
      const result = await fsckPoint(base.path, base.partition, chunks, base.chunkSize, this.receiver, image);
      if (!result.ok) {
        const kept = test.info().outputPath(`quiet-${seen.item.id}.img`);
        await mkdir(test.info().outputDir, { recursive: true });
        await copyFile(image, kept);
        this.fail(`the file system at quiet point ${seen.item.id} (${JSON.stringify(point)}) is damaged (image kept in ${kept}):\n${result.output.slice(0, 3000)}`);
      }
      sent += chunks.length;
      this.replayed.add(seen.item.id);
      this.stats.replays++;
      this.stats.replayMs += Date.now() - started;
    }
    log(`replayed ${picked.length} quiet points (${sent} changed chunks): ${picked.map((s) => `${s.item.branch}:${s.item.seq}`).join(" ")}`);
  }

  /**
   * Every snapshot manifest published since this test began names only chunks the repository has
   * (a half-published one would not). The repository is this test's own copy, so tests running
   * beside it (share.spec plants broken snapshots) are not seen; older snapshots came with the copy.
   */
  private async checkRepository(): Promise<void> {
    const dir = join(this.repo.root, "snapshots");
    for (const file of await readdir(dir)) {
      // A snapshot the server is still writing (its temporary name; renamed whole when done).
      if (file.includes(".upload-")) continue;
      const written = await stat(join(dir, file)).catch(() => null);
      if (!written || written.mtimeMs < this.began) continue;
      const manifest = JSON.parse(await readFile(join(dir, file), "utf8")) as DiskManifest;
      for (const ref of [...manifest.chunks, ...(manifest.machine?.pieces ?? [])]) {
        if (ref && !(await stat(join(this.repo.root, "chunks", ref)).catch(() => null))) this.fail(`snapshot ${file} names chunk ${ref}, which the repository lacks`);
      }
    }
  }

  /**
   * The full run's last pass: every checkpoint's state is loaded by the engine as a restore loads
   * it (every piece there, the size it was saved at); every manual checkpoint not restored yet, and
   * a seeded tenth of the automatic ones (at least ten), are restored in the guest; every quiet
   * point not replayed yet is replayed.
   */
  async finish(): Promise<void> {
    this.round = Number.MAX_SAFE_INTEGER;
    const choices = CHOICES.derive(999_999);
    const v = await this.refresh();
    let loaded = 0;
    for (const c of v.checkpoints) {
      const bytes = await this.page.evaluate(async (id) => {
        type Api = { checkpointBytes(id: string): Promise<number> };
        try {
          return await (window as unknown as { sandglass: { debug: { api: Api } } }).sandglass.debug.api.checkpointBytes(id);
        } catch (err) {
          return String(err);
        }
      }, c.id);
      if (bytes !== c.stateBytes) this.fail(`checkpoint ${c.id} does not load: ${bytes} (saved ${c.stateBytes} bytes)`);
      else loaded++;
    }
    log(`final pass: ${loaded} of ${v.checkpoints.length} checkpoints' states load whole`);
    const unrestored = [...this.checkpoints.values()].filter((s) => !this.restored.has(s.item.id));
    const autos = unrestored.filter((s) => s.item.auto);
    await this.restore([...unrestored.filter((s) => !s.item.auto), ...choices.sample(autos, Math.max(10, Math.ceil(autos.length / 10)))]);
    await this.replay([...this.quiet.values()].filter((s) => !this.replayed.has(s.item.id)));
  }
}

// ── the tests ───────────────────────────────────────────────────────────────────────────────────

// A trace of a browser killed under Playwright fails the test ("Object with guid … was not bound in
// the connection", from the tracing harness), and one of a 30-minute run would be huge anyway.
test.use({ trace: "off" });

function announce(kills: Kill[]): void {
  log(`seed ${SEED} (SANDGLASS_CRASH_SEED=${SEED} npm run test:crash repeats it), ${FULL ? "full run" : "short sample"}, ${kills.length} kills:`);
  log(kills.map((k) => `#${k.n} ${k.scenario} ${k.fraction.toFixed(3)}`).join(", "));
}

test("crash-kill: SIGKILL during dd, checkpoints, rewinds, branch switches, publishes, imports and discards loses nothing shown as saved", async () => {
  const kills = PLAN.filter((k) => k.scenario !== "migration");
  test.setTimeout(FULL ? 8 * 3600_000 : 40 * 60_000);
  announce(kills);
  const started = Date.now();
  const work = await mkdtemp(join(tmpdir(), "sandglass-crash-"));
  const repo = await serve(await linkedRepoCopy(work));
  const receiver = await Receiver.start(join(work, "received"));
  const lab = new Lab(repo, receiver, work, join(work, "profile"));
  const rounds: string[] = [];
  let finished = false;
  try {
    await lab.setUp();
    log(`set up in ${Date.now() - started} ms`);
    for (const kill of kills) {
      const roundStart = Date.now();
      const line = await lab.play(kill);
      const played = Date.now();
      const before = { ...lab.stats };
      await lab.verify(kill);
      const s = (ms: number) => Math.round(ms / 1000);
      rounds.push(
        `${line}; round ${s(Date.now() - roundStart)} s (operations ${s(played - roundStart)} s, reopen ${s(lab.stats.reopenMs - before.reopenMs)} s, ` +
          `restores ${s(lab.stats.restoreMs - before.restoreMs)} s, replays ${s(lab.stats.replayMs - before.replayMs)} s)`,
      );
    }
    if (FULL) await lab.finish();
    finished = lab.failures.length === 0;
  } finally {
    await lab.close();
    await receiver.close();
    await repo.close();
    // A failed run keeps its profile and repository copy: opening the profile again
    // (chromium --user-data-dir=<work>/profile, the server on <work>/repo) shows the failure.
    if (finished) await rm(work, { recursive: true, force: true });
    else log(`kept for inspection: ${work}`);
  }
  const perScenario = Object.fromEntries(SCENARIOS.map((s) => [s, kills.filter((k) => k.scenario === s).length]));
  log(`done in ${Math.round((Date.now() - started) / 1000)} s: ${JSON.stringify(perScenario)}; measured ${JSON.stringify(Object.fromEntries(lab.durations))}`);
  log(
    `${lab.stats.restores} restores (${Math.round(lab.stats.restoreMs / 1000)} s), ${lab.stats.replays} quiet points replayed (${Math.round(lab.stats.replayMs / 1000)} s), ` +
      `${lab.checkpoints.size} checkpoints and ${lab.quiet.size} quiet points shown, ${lab.restored.size} and ${lab.replayed.size} of them checked`,
  );
  for (const r of rounds) log(r);
  expect(lab.failures, `seed ${SEED}`).toEqual([]);
});

/** The machine the older store holds: writes inside partition 1 (FAT), past what the bootloader reads. */
const LEGACY_FIRST = (24 * 1024 * 1024) / 4096;
const LEGACY_BLOCKS = 2304;
/** Version 2 kept one record per block version: 3,840 of them here, ~15 MiB. */
const LEGACY_WRITES: LegacyWrite[] = [
  { firstBlock: LEGACY_FIRST, blocks: 2048, pattern: 1 },
  { firstBlock: LEGACY_FIRST + 512, blocks: 1024, pattern: 2 },
  { firstBlock: LEGACY_FIRST + 1024, blocks: 256, pattern: 0 },
  { firstBlock: LEGACY_FIRST + 1792, blocks: 512, pattern: 3 },
];

test("crash-kill: SIGKILL during a store migration: the next open migrates, every write in place", async () => {
  const kills = PLAN.filter((k) => k.scenario === "migration");
  test.setTimeout(FULL ? 3600_000 : 15 * 60_000);
  announce(kills);
  const repo = await serve();
  const work = await mkdtemp(join(tmpdir(), "sandglass-crash-migration-"));
  const expected = legacyRegionSha256(LEGACY_WRITES, LEGACY_FIRST, LEGACY_BLOCKS);
  const failures: string[] = [];
  let measured = 0;
  const once = async (kill: Kill | null) => {
    const profile = await mkdtemp(join(work, "profile-"));
    const id = randomUUID();
    let b = await launchOn(profile);
    try {
      await b.page.goto(`${repo.url}repo/`);
      await writeVersion2Store(b.page, { id, name: "kept from before", repo: `${repo.url}repo/`, image: "small" }, LEGACY_WRITES);
      const url = `${repo.url}#/m/${id}`;
      const opened = (page: Page) =>
        page.waitForFunction(
          () => {
            const s = (window as unknown as { sandglass?: { machine: unknown; error: string | null } }).sandglass;
            return s?.error ?? s?.machine;
          },
          null,
          { timeout: OPEN_TIMEOUT_MS, polling: 20 },
        );
      const started = Date.now();
      let failed: unknown;
      // Caught at once: the kill makes it fail, and an unhandled failure would fail the test.
      const opening = (async () => {
        await b.page.goto(url);
        await opened(b.page);
      })().catch((err: unknown) => (failed = err));
      if (!kill) {
        await opening;
        if (failed) throw failed;
        measured = Date.now() - started;
        log(`migration: opening the older store took ${measured} ms unkilled`);
      } else {
        const delay = Math.round(kill.fraction * measured);
        await sleep(delay);
        await b.kill();
        await opening;
        log(`kill #${kill.n} migration: ${kill.fraction.toFixed(3)} × ${measured} ms measured = ${delay} ms (every process gone at ${Date.now() - started} ms)`);
        b = await launchOn(profile);
        await b.page.goto(url);
        await opened(b.page);
      }
      const error = await b.page.evaluate(() => (window as unknown as { sandglass: { error: string | null } }).sandglass.error);
      const summary = await storeSummary(b.page);
      const read = await b.page.evaluate(
        async ({ offset, length }) => {
          type S = { machine: { name: string; now: { branch: number; seq: number } }; debug: { api: { readAt(p: unknown, o: number, l: number): Promise<Uint8Array> } } };
          const s = (window as unknown as { sandglass: S }).sandglass;
          const bytes = await s.debug.api.readAt({ branch: s.machine.now.branch, seq: s.machine.now.seq }, offset, length);
          const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
          return { name: s.machine.name, now: s.machine.now, sha256: [...digest].map((x) => x.toString(16).padStart(2, "0")).join("") };
        },
        { offset: LEGACY_FIRST * 4096, length: LEGACY_BLOCKS * 4096 },
      );
      const menu = await b.page.evaluate(async () => {
        const s = (window as unknown as { sandglass: { machines: { id: string }[]; refreshMachines(): Promise<void> } }).sandglass;
        await s.refreshMachines();
        return s.machines.map((m) => m.id);
      });
      const problems = [
        error ? `the page says: ${error}` : "",
        summary?.version === STORE_VERSION ? "" : `store version ${summary?.version}, not ${STORE_VERSION}`,
        summary?.stores.includes("groups") && !summary.stores.includes("blocks") && !summary.stores.includes("statePieces") ? "" : `stores ${summary?.stores.join(",")}`,
        JSON.stringify(summary?.machines) === JSON.stringify([id]) && JSON.stringify(menu) === JSON.stringify([id]) ? "" : `machines ${JSON.stringify(summary?.machines)}, menu ${JSON.stringify(menu)}`,
        read.name === "kept from before" && read.now.seq === LEGACY_WRITES.length ? "" : `machine ${JSON.stringify(read)}`,
        read.sha256 === expected ? "" : `the migrated writes read ${read.sha256}, not ${expected}`,
      ].filter(Boolean);
      if (problems.length) failures.push(`${kill ? `kill #${kill.n}` : "unkilled"} (seed ${SEED}): ${problems.join("; ")}`);
      log(`migration ${kill ? `kill #${kill.n}` : "unkilled"}: ${problems.length ? problems.join("; ") : "migrated, every write in place"}`);
    } finally {
      await b.kill();
      await rm(profile, { recursive: true, force: true });
    }
  };
  try {
    await once(null);
    for (const kill of kills) await once(kill);
  } finally {
    await repo.close();
    await rm(work, { recursive: true, force: true });
  }
  expect(failures, `seed ${SEED}`).toEqual([]);
});
