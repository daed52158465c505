/**
 * A Chromium this test starts itself, on a profile on disk, so that it can be killed as a power
 * cut or a crash would end it: SIGKILL to its whole process group (browser, renderers, GPU and
 * utility processes at once, IndexedDB's backend included), then started again on the same
 * profile. Playwright's launchPersistentContext hides the process, so this spawns Debian's
 * Chromium with the flags of playwright.config.ts and attaches with connectOverCDP.
 */
import { chromium, type Browser, type BrowserContext, type Page } from "@playwright/test";
import { spawn, type ChildProcess } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import config from "../../playwright.config.ts";

/** How long Chromium may take to print its DevTools address (a noisy machine, a big profile). */
const START_TIMEOUT_MS = 60_000;

/** The flags every Chromium of the end-to-end tests gets (playwright.config.ts), plus Playwright's own defaults that matter here. */
const FLAGS = [
  ...(config.use?.launchOptions?.args ?? []),
  "--headless",
  "--remote-debugging-address=127.0.0.1",
  "--remote-debugging-port=0",
  "--no-default-browser-check",
  "--password-store=basic",
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
  "--disable-features=Translate,MediaRouter,OptimizationHints",
];

export interface RunningBrowser {
  /** Process id of the browser, leader of its own process group. */
  pid: number;
  browser: Browser;
  context: BrowserContext;
  page: Page;
  /** SIGKILL to every process of this browser at once; resolves when none is left. */
  kill(): Promise<void>;
}

/**
 * Starts Chromium on `profile` (created if missing) and attaches to its one page. A start that
 * never answers (once seen on a machine at load 10) is killed and tried once more.
 */
export async function launchOn(profile: string): Promise<RunningBrowser> {
  try {
    return await start(profile);
  } catch (err) {
    console.log(`crash: Chromium did not start, trying again: ${String(err).slice(0, 300)}`);
    return start(profile);
  }
}

async function start(profile: string): Promise<RunningBrowser> {
  const executable = config.use?.launchOptions?.executablePath ?? "/usr/bin/chromium";
  const child = spawn(executable, [...FLAGS, `--user-data-dir=${profile}`, "about:blank"], {
    detached: true, // its own process group: one signal reaches every process it starts
    stdio: ["ignore", "ignore", "pipe"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let endpoint: string;
  try {
    endpoint = await devtoolsUrl(child);
  } catch (err) {
    await killGroup(child.pid!, profile, exited);
    throw err;
  }
  const browser = await chromium.connectOverCDP(endpoint);
  const context = browser.contexts()[0]!;
  const page = context.pages()[0] ?? (await context.newPage());
  await page.setViewportSize({ width: 1400, height: 900 });
  return { pid: child.pid!, browser, context, page, kill: () => killGroup(child.pid!, profile, exited) };
}

/** Reads "DevTools listening on ws://…" from Chromium's stderr. */
function devtoolsUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`Chromium printed no DevTools address in ${START_TIMEOUT_MS} ms:\n${seen}`)), START_TIMEOUT_MS);
    child.stderr!.on("data", (data: Buffer) => {
      seen += data.toString();
      const match = /DevTools listening on (ws:\/\/\S+)/.exec(seen);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`Chromium exited (${code}) before it listened:\n${seen}`));
    });
  });
}

/**
 * SIGKILL to the browser's process group, then to any process still running on this profile (a
 * helper that moved to a group of its own), by pid; waits until none is left.
 */
async function killGroup(pid: number, profile: string, exited: Promise<void>): Promise<void> {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // Already gone.
  }
  await exited;
  for (let round = 0; round < 100; round++) {
    const left = await processesOn(profile);
    if (left.length === 0) return;
    for (const p of left) {
      try {
        process.kill(p, "SIGKILL");
      } catch {
        // Exited meanwhile.
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Chromium processes on ${profile} survived SIGKILL`);
}

/** Pids of processes whose command line names this profile (and are not zombies). */
async function processesOn(profile: string): Promise<number[]> {
  const found: number[] = [];
  const flag = `--user-data-dir=${profile}`;
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8");
      if (!cmdline.split("\0").includes(flag)) continue;
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      if (/\) Z /.test(stat)) continue;
      found.push(Number(entry));
    } catch {
      // Exited while we looked.
    }
  }
  return found;
}
