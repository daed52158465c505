/**
 * Issue 3 benchmarks: rewind latency as history grows, guest `dd` against v86's in-memory disk,
 * checkpoint cost (idle and under writes), storage growth while idle, and how well page-split
 * checkpoints deduplicate compared with content-defined chunking.
 *
 * Long histories are made through the real engine in the real page (window.sandglass.debug):
 * the writes put back bytes the disk already holds, in the boot partition the running guest never
 * touches, so the log and the block index grow while the guest stays consistent.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { splitState } from "../../src/engine/checkpoint-format.ts";
import { appAnswers, guestOf, median, table, timeBaseline, timeRewind, typeApp, waitFor, type Guest, type Servers } from "./run.ts";

const MiB = 2 ** 20;
/** Inside partition 1 (FAT, sectors 2048..67583), past the files the bootloader used. */
const SCRATCH_OFFSET = 24 * MiB;
const SCRATCH_BLOCKS = 256;

/**
 * Makes the Sandglass page note when awaited markers appear in the guest's serial output, as the
 * baseline page does (baseline.html): both pages are timed by the same in-page code, with no
 * DevTools round trip or terminal rendering read in the measurement.
 */
async function watchAppSerial(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { sandglass: any; serialText: string; benchWatch: string[]; benchMarks: Record<string, number> };
    w.serialText = "";
    w.benchWatch = [];
    w.benchMarks = {};
    const decoder = new TextDecoder();
    w.sandglass.onSerial(
      (bytes: Uint8Array) => {
        w.serialText += decoder.decode(bytes, { stream: true });
        const tail = w.serialText.slice(-64);
        for (const m of w.benchWatch) if (!(m in w.benchMarks) && tail.includes(m)) w.benchMarks[m] = performance.now();
      },
      () => undefined,
    );
  });
}

/** Runs a guest command bracketed by markers; returns ms between the markers appearing (page clock). */
async function timed(page: Page, send: (line: string) => Promise<unknown>, command: string, timeoutMs = 600_000): Promise<number> {
  const n = Math.floor(Math.random() * 1e6);
  const marks = [`T0-${n}`, `T1-${n + 1}`] as const;
  type Watching = { benchWatch: string[]; benchMarks: Record<string, number> };
  await page.evaluate((m) => (window as unknown as Watching).benchWatch.push(...m), marks);
  await send(`echo T0-$((${n}+0)); ${command}; echo T1-$((${n}+1))\n`);
  await waitFor(() => page.evaluate((m) => m in (window as unknown as Watching).benchMarks, marks[1]), timeoutMs, command);
  return page.evaluate(([a, b]) => {
    const got = (window as unknown as Watching).benchMarks;
    return got[b]! - got[a]!;
  }, marks);
}

/**
 * CPU time (ms) one renderer process spent, by thread: its main thread (the emulator), its
 * dedicated workers (v86's timer worker in both pages, and Sandglass's disk worker), and its
 * thread pool (mostly V8 compiling the WebAssembly v86 generates for the guest's code).
 */
type Cpu = { main: number; worker: number; pool: number };

/** CPU used so far by each of Chromium's renderer processes, from /proc (Linux). */
function rendererCpu(): Map<number, Cpu> {
  const out = new Map<number, Cpu>();
  const tick = 1000 / 100; // USER_HZ
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/cmdline`, "utf8").includes("--type=renderer")) continue;
      const cpu: Cpu = { main: 0, worker: 0, pool: 0 };
      for (const tid of readdirSync(`/proc/${entry}/task`)) {
        const stat = readFileSync(`/proc/${entry}/task/${tid}/stat`, "utf8");
        const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        const ms = (Number(fields[11]) + Number(fields[12])) * tick; // utime + stime
        if (tid === entry) cpu.main += ms;
        else if (name.startsWith("DedicatedWorker")) cpu.worker += ms;
        else if (name.startsWith("ThreadPool")) cpu.pool += ms;
      }
      out.set(Number(entry), cpu);
    } catch {
      // the process ended meanwhile
    }
  }
  return out;
}

/** CPU used since `before` by the renderer whose main thread used most (the page being timed). */
function cpuSince(before: Map<number, Cpu>): Cpu {
  let best: Cpu = { main: 0, worker: 0, pool: 0 };
  for (const [pid, now] of rendererCpu()) {
    const was = before.get(pid) ?? { main: 0, worker: 0, pool: 0 };
    const used = { main: now.main - was.main, worker: now.worker - was.worker, pool: now.pool - was.pool };
    if (used.main > best.main) best = used;
  }
  return best;
}


/** Runs `measure` `n` times in a row; the median. */
async function medianOf(n: number, measure: () => Promise<number>): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < n; i++) runs.push(await measure());
  return median(runs);
}

const toApp = (page: Page) => (line: string) => typeApp(page, line);
const toBaseline = (page: Page) => (line: string) =>
  page.evaluate((l) => (window as unknown as { sendSerial(t: string): void }).sendSerial(l), line);

const DD_WRITE = "dd if=/dev/zero of=/root/big bs=1M count=64 conv=fsync 2>/dev/null";
const DD_READ = "sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/root/big of=/dev/null bs=1M 2>/dev/null";
const DD_CLEAN = "rm /root/big; sync";
/** The second read starts this long after the first: the write's background storing is over. */
const AT_REST_MS = 20_000;
/** Reads at rest, one after another; their median is the figure. */
const AT_REST_READS = 3;

/**
 * Grows the machine's history by `writes` logged writes and `checkpoints` automatic checkpoints
 * (taken by the session, as its timer does), then takes the checkpoint the rewinds go back to.
 */
async function grow(page: Page, writes: number, checkpoints: number): Promise<void> {
  await page.evaluate(
    async ({ writes, checkpoints, offset, blocks }) => {
      const s = (window as unknown as { sandglass: any }).sandglass;
      const api = s.debug.api;
      let done = 0;
      for (let c = 0; c < checkpoints; c++) {
        const count = c === checkpoints - 1 ? writes - done : Math.min(Math.floor(writes / checkpoints), writes - done);
        const batch: Promise<void>[] = [];
        for (let i = 0; i < count; i++) {
          const at = offset + ((done + i) % blocks) * 4096;
          batch.push(api.read(at, 4096).then((data: Uint8Array) => api.write(at, data)));
          if (batch.length >= 256) await Promise.all(batch.splice(0));
        }
        await Promise.all(batch);
        done += count;
        await s.checkpoint(true);
      }
      await api.flush();
      await new Promise((r) => setTimeout(r, 1500));
      await s.checkpoint(false);
    },
    { writes, checkpoints, offset: SCRATCH_OFFSET, blocks: SCRATCH_BLOCKS },
  );
}

/**
 * Rewinds to the newest manual checkpoint through the session (as a click does; see timeRewind):
 * ms for the whole, and for the restore alone.
 */
async function rewindLatency(page: Page): Promise<{ totalMs: number; restoreMs: number }> {
  // The card a person clicks is already on the page: finding the target is not part of the time.
  await page.evaluate(async () => {
    const s = (window as unknown as { sandglass: any }).sandglass;
    await s.refreshTimeline();
    (window as unknown as { benchTarget: unknown }).benchTarget = s.timeline.checkpoints.filter((c: any) => !c.auto).at(-1);
  });
  return timeRewind(page, null);
}

/** Bytes a sequence of states adds to a store, deduplicated by the given cutting rule. */
function dedup(states: Uint8Array[], cut: (s: Uint8Array) => Uint8Array[]): number[] {
  const seen = new Set<string>();
  return states.map((state) => {
    let added = 0;
    for (const piece of cut(state)) {
      const h = createHash("sha256").update(piece).digest("hex");
      if (!seen.has(h)) {
        seen.add(h);
        added += piece.byteLength;
      }
    }
    return added;
  });
}

/** Content-defined chunking with a gear rolling hash (FastCDC-style), 1–16 KiB, ~4 KiB average. */
function cdc(state: Uint8Array): Uint8Array[] {
  const gear = new Uint32Array(256);
  let seed = 0x9e3779b9;
  for (let i = 0; i < 256; i++) gear[i] = seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  const MIN = 1024;
  const MAX = 16384;
  const MASK = (1 << 12) - 1;
  const out: Uint8Array[] = [];
  let start = 0;
  let hash = 0;
  for (let i = 0; i < state.length; i++) {
    hash = ((hash << 1) + gear[state[i]!]!) >>> 0;
    const len = i - start + 1;
    if ((len >= MIN && (hash & MASK) === 0) || len >= MAX) {
      out.push(state.subarray(start, i + 1));
      start = i + 1;
      hash = 0;
    }
  }
  if (start < state.length) out.push(state.subarray(start));
  return out;
}

async function pageState(page: Page): Promise<Uint8Array> {
  const b64 = await page.evaluate(async () => {
    const state = new Uint8Array(await (window as unknown as { sandglass: any }).sandglass.debug.emulator.save_state());
    let s = "";
    for (let i = 0; i < state.length; i += 0x8000) s += String.fromCharCode(...state.subarray(i, i + 0x8000));
    return btoa(s);
  });
  return new Uint8Array(Buffer.from(b64, "base64"));
}

async function checkpointCost(page: Page): Promise<{ pauseMs: number; storedBytes: number }> {
  return page.evaluate(async () => {
    const s = (window as unknown as { sandglass: any }).sandglass;
    await s.checkpoint(false);
    return s.lastCheckpoint;
  });
}

export async function historyBench(browser: Browser, servers: Servers, parts: { dd: boolean; rewind: boolean }): Promise<void> {
  const context = await browser.newContext();
  const guest = guestOf();
  if (parts.dd) await ddAndCheckpointCost(browser, servers, context, guest);
  if (parts.rewind) await rewindGrowth(servers, context, guest);
  await context.close();
}

async function ddAndCheckpointCost(browser: Browser, servers: Servers, context: BrowserContext, guest: Guest): Promise<void> {
  // ── dd: Sandglass (write log on) vs v86's in-memory disk ──
  // One page at a time: a page left open (an idle guest, storage catching up) would slow the
  // other's figures. Each round runs v86, v86 with Sandglass's resume, then Sandglass, each on a
  // freshly booted guest; a sub-second read moves by tens of percent from run to run, so each
  // figure is a median.
  const rounds = Number(process.env.DD_ROUNDS ?? 3);
  // The first write and read after boot also time v86 compiling the guest's hot code (its JIT
  // runs on Chromium's worker threads: 2.4 s of their CPU during one 1.7 s first read, against
  // 0.7 s for the same read later); the second pair is the disk path at speed.
  // Wall time is what the target is about; CPU (from /proc) says where a gap comes from: a read
  // at rest moves with how soon V8 compiles v86's code for the reloaded `dd` (dropping caches
  // drops the guest's code pages too) and how long v86 waits between its slices, both of which
  // vary from read to read on two cores.
  type Timing = "coldWrite" | "coldRead" | "write" | "read" | "atRest";
  type Figures = Record<Timing, number> & { writeCpu: Cpu; restCpu: Cpu };
  const series = async (page: Page, send: (line: string) => Promise<unknown>, between: () => Promise<unknown>): Promise<Figures> => {
    const coldWrite = await timed(page, send, DD_WRITE);
    const coldRead = await timed(page, send, DD_READ);
    await timed(page, send, DD_CLEAN);
    await between();
    let cpu = rendererCpu();
    const write = await timed(page, send, DD_WRITE);
    const writeCpu = cpuSince(cpu);
    const read = await timed(page, send, DD_READ);
    await page.waitForTimeout(AT_REST_MS);
    cpu = rendererCpu();
    const atRest = await medianOf(AT_REST_READS, () => timed(page, send, DD_READ));
    const used = cpuSince(cpu);
    const restCpu = { main: used.main / AT_REST_READS, worker: used.worker / AT_REST_READS, pool: used.pool / AT_REST_READS };
    await timed(page, send, DD_CLEAN);
    return { coldWrite, coldRead, write, read, atRest, writeCpu, restCpu };
  };
  // Sandglass checkpoints the deletion a second after it settles: both pages wait the same.
  const settle = (page: Page) => () => page.waitForTimeout(3000);
  // Sandglass's page resumes v86 between slices on its own thread (src/vm/fast-resume.ts) instead
  // of through v86's timer worker: a scheduling gain apart from the disk. A third page, v86's
  // in-memory disk with that same resume, shows what the disk path alone costs.
  const v86: Figures[] = [];
  const control: Figures[] = [];
  const sandglass: Figures[] = [];
  const baselineSeries = async (sameThread: boolean): Promise<Figures> => {
    const base = await browser.newContext();
    const bpage = await base.newPage();
    // Until its shell answers (a resumed one prints no prompt until asked).
    await timeBaseline(bpage, `${servers.baseline.url}?mode=buffer&${guest.baselineQuery}${guest.ddFromBooted ? "&resume=1" : ""}`, guest.ddFromBooted);
    if (sameThread) {
      await bpage.evaluate(() => {
        // What resumeOnSameThread does (no imports in this page): immediate resumes by message.
        const v = (window as unknown as { emulator: { v86: any } }).emulator.v86;
        const viaWorker = v.yield.bind(v);
        const channel = new MessageChannel();
        channel.port1.onmessage = (event: MessageEvent<number>) => v.yield_callback(event.data);
        v.yield = (t: number, tick: number) => (t < 1 ? channel.port2.postMessage(tick) : viaWorker(t, tick));
      });
    }
    const figures = await series(bpage, toBaseline(bpage), settle(bpage));
    await base.close();
    return figures;
  };
  let page!: Page;
  for (let round = 0; round < rounds; round++) {
    v86.push(await baselineSeries(false));
    control.push(await baselineSeries(true));

    if (round > 0) await page.close();
    page = await context.newPage();
    await page.goto(`${servers.app.url}#/new/${guest.ddFromBooted ? guest.booted : guest.cold}`);
    await appAnswers(page);
    await watchAppSerial(page);
    const checkpoints = () => page.evaluate(() => (window as unknown as { sandglass: any }).sandglass.timeline?.checkpoints.length ?? 0);
    const before = await checkpoints();
    sandglass.push(await series(page, toApp(page), settle(page)));
    const pct = (k: Timing) => `${((100 * v86[round]![k]) / sandglass[round]![k]).toFixed(0)} %`;
    const pctControl = (k: Timing) => `${((100 * control[round]![k]) / sandglass[round]![k]).toFixed(0)} %`;
    console.log(
      `  round ${round + 1}: first write ${pct("coldWrite")}, read ${pct("coldRead")}; second write ${pct("write")}, ` +
        `read right after ${pct("read")}, at rest ${pct("atRest")}; against the same resume: ` +
        `${(["coldWrite", "coldRead", "write", "read", "atRest"] as const).map(pctControl).join(" / ")}; ` +
        `${(await checkpoints()) - before} automatic checkpoints`,
    );
  }
  const rate = (ms: number) => (64 / (ms / 1000)).toFixed(1) + " MiB/s";
  const row = (name: string, k: Timing) => {
    const sg = median(sandglass.map((f) => f[k]));
    const v = median(v86.map((f) => f[k]));
    const c = median(control.map((f) => f[k]));
    const perRound = sandglass.map((f, i) => ((100 * v86[i]![k]) / f[k]).toFixed(0)).join(" / ");
    return [name, rate(sg), rate(v), `${((100 * v) / sg).toFixed(0)} %`, `${perRound} %`, rate(c), `${((100 * c) / sg).toFixed(0)} %`];
  };
  table(
    `Guest dd on the ${guest.label} image (${guest.memoryMiB} MiB RAM), Sandglass with write log vs v86 in-memory disk (median of ${rounds} rounds)`,
    ["Workload", "Sandglass", "v86 {buffer}", "Sandglass / v86", "Each round", "v86, same resume", "Sandglass / that"],
    [
      row("first write 64 MiB after boot (conv=fsync)", "coldWrite"),
      row("first read right after (caches dropped)", "coldRead"),
      row("write 64 MiB again", "write"),
      row("read right after", "read"),
      row(`read again ${AT_REST_MS / 1000} s later (median of ${AT_REST_READS})`, "atRest"),
    ],
  );
  const cpuRow = (name: string, k: "writeCpu" | "restCpu") => {
    const ms = (figures: Figures[], part: keyof Cpu) => `${median(figures.map((f) => f[k][part])).toFixed(0)} ms`;
    return [name, ms(sandglass, "main"), ms(v86, "main"), ms(control, "main"), ms(sandglass, "worker"), ms(v86, "worker"), ms(sandglass, "pool"), ms(v86, "pool")];
  };
  table(
    `Renderer CPU during the dd (median of ${rounds} rounds; Linux /proc, 10 ms ticks)`,
    ["Workload", "Sandglass main thread", "v86 main thread", "v86 same resume, main", "Sandglass workers", "v86 workers", "Sandglass thread pool", "v86 thread pool"],
    [cpuRow("write 64 MiB again", "writeCpu"), cpuRow("one read at rest", "restCpu")],
  );

  // ── checkpoint cost, idle and under writes; storage growth while idle; dedup rule ──
  const costRows: (string | number)[][] = [];
  await page.waitForTimeout(3000);
  const idleStates = [await pageState(page)];
  for (let i = 0; i < 3; i++) {
    const c = await checkpointCost(page);
    costRows.push(["idle", `${c.pauseMs.toFixed(0)} ms`, `${(c.storedBytes / 1024).toFixed(0)} KiB`]);
    await page.waitForTimeout(2000);
  }
  idleStates.push(await pageState(page));
  await typeApp(page, "while :; do dd if=/dev/urandom of=/root/w bs=64k count=16 conv=fsync 2>/dev/null; done &\n");
  await page.waitForTimeout(3000);
  for (let i = 0; i < 3; i++) {
    const c = await checkpointCost(page);
    costRows.push(["write-heavy (dd loop)", `${c.pauseMs.toFixed(0)} ms`, `${(c.storedBytes / 1024).toFixed(0)} KiB`]);
    await page.waitForTimeout(2000);
  }
  const busyState = await pageState(page);
  await typeApp(page, "kill %1; rm -f /root/w; sync\n");
  await page.waitForTimeout(5000);
  const before = await page.evaluate(async () => (await navigator.storage.estimate()).usage ?? 0);
  await page.waitForTimeout(60_000);
  const after = await page.evaluate(async () => (await navigator.storage.estimate()).usage ?? 0);
  costRows.push(["storage growth over one idle minute", "", `${((after - before) / 1024).toFixed(0)} KiB`]);
  table("Checkpoint cost (main-thread pause of save_state, bytes stored)", ["Workload", "Pause", "Stored"], costRows);

  const states = [...idleStates, busyState];
  const page4k = dedup(states, splitState);
  const cdc4k = dedup(states, cdc);
  table(
    "Checkpoint dedup: bytes each state adds (state 1 idle, 2 idle later, 3 under writes)",
    ["Rule", "State 1", "State 2", "State 3"],
    [
      ["page split (used)", ...page4k.map((b) => `${(b / MiB).toFixed(2)} MiB`)],
      ["content-defined, ~4 KiB", ...cdc4k.map((b) => `${(b / MiB).toFixed(2)} MiB`)],
    ],
  );

  await page.close().catch(() => undefined);
}

async function rewindGrowth(servers: Servers, context: BrowserContext, guest: Guest): Promise<void> {
  // ── rewind latency as history grows 100× ──
  const rewindRows: (string | number)[][] = [];
  const fresh = await context.newPage();
  await fresh.goto(`${servers.app.url}#/new/${guest.cold}`);
  await appAnswers(fresh);
  let autos = 0;
  let written = 0;
  const stages = [
    [10, 1_000],
    [100, 10_000],
    [1000, 100_000],
  ] as const;
  for (const [stage, [targetCheckpoints, targetWrites]] of stages.entries()) {
    const started = Date.now();
    await grow(fresh, targetWrites - written, targetCheckpoints - autos);
    autos = targetCheckpoints;
    written = targetWrites;
    const checkpoints = autos + stage + 1; // the automatic ones and one manual per stage
    const growMs = Date.now() - started;
    const runs = [];
    for (let i = 0; i < 5; i++) runs.push(await rewindLatency(fresh));
    const samples = runs.map((r) => r.totalMs).sort((a, b) => a - b);
    const restores = runs.map((r) => r.restoreMs).sort((a, b) => a - b);
    rewindRows.push([
      checkpoints,
      written,
      `${samples[2]} ms`,
      `${samples[0]}–${samples[4]} ms`,
      `${restores[2]} ms`,
      `${(growMs / 1000).toFixed(0)} s`,
    ]);
    console.log(`  rewind with ${checkpoints} checkpoints / ${written} writes: ${runs.map((r) => `${r.totalMs} (${r.restoreMs})`).join(", ")} ms`);
  }
  await fresh.close();
  table(
    `Rewind to a checkpoint, ${guest.label} image (${guest.memoryMiB} MiB RAM): click → shell answering`,
    ["Checkpoints", "Logged writes", "Median of 5", "Range", "Restore alone (median)", "(time to build history)"],
    rewindRows,
  );
}
