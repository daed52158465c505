/**
 * Shared Playwright fixtures: a real repository server on 127.0.0.1 serving the built app and the
 * built guest repository, with every request recorded, and helpers that drive the serial terminal.
 */
import { test as base, expect, type Browser, type BrowserContext, type Page } from "@playwright/test";
import { execFile } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { startServer } from "../../server/repo-server.ts";
import { PATIENCE_KEY } from "../../src/app/repo-patience.ts";
import { chunkHash, manifestPath, type DiskManifest } from "../../src/engine/repo-format.ts";

export interface RequestLog {
  method: string;
  path: string;
  status: number;
  bytes: number;
}

export interface RepoServer {
  url: string;
  requests: RequestLog[];
  /** Requests for disk chunks since `from` (an index into `requests`). */
  chunkRequests(from?: number): RequestLog[];
  close(): Promise<void>;
}

/** A server of a repository folder (not a bucket). */
export interface FolderRepoServer extends RepoServer {
  root: string;
}

const execFileAsync = promisify(execFile);

export const APP_ROOT = resolve(process.env.SANDGLASS_APP ?? "dist");
export const REPO_ROOT = resolve(process.env.SANDGLASS_REPO ?? "build/repo");

/** Starts a server on a free loopback port; the caller closes it. `relay`: the guests' TCP relay. */
export async function serve(repoRoot = REPO_ROOT, options: { relay?: boolean } = {}): Promise<FolderRepoServer> {
  const requests: RequestLog[] = [];
  const server = await startServer({ repoRoot, appRoot: APP_ROOT, onRequest: (r) => requests.push(r), relay: options.relay ?? false });
  return {
    url: server.url,
    root: repoRoot,
    requests,
    chunkRequests: (from = 0) => requests.slice(from).filter((r) => r.path.startsWith("/repo/chunks/")),
    close: (() => {
      let closing: Promise<void> | undefined;
      return () => (closing ??= server.close());
    })(),
  };
}

/**
 * A private copy of the repository folder, its files hard-linked (instant, no extra space): for a
 * test that must not see what tests running beside it publish or plant, or that damages a file
 * (remove the link first, then write: writing through it would damage the shared file too). The
 * server writes new files by renaming, so the shared folder never sees the copy's uploads.
 */
export async function linkedRepoCopy(into: string): Promise<string> {
  const dir = join(into, "repo");
  // Hard links need one file system; elsewhere a plain copy (~270 MiB, seconds).
  await execFileAsync("cp", ["-al", REPO_ROOT, dir]).catch(async () => {
    await rm(dir, { recursive: true, force: true });
    await execFileAsync("cp", ["-a", REPO_ROOT, dir]);
  });
  return dir;
}

export const test = base.extend<{ repo: RepoServer }>({
  repo: async ({}, use) => {
    const server = await serve();
    await use(server);
    await server.close();
  },
});

export { expect };

/**
 * The small busybox image (booted snapshot): most tests use it, where the real Debian guest adds
 * nothing but time. Its machine is named "small".
 */
export function smallImage(repo: RepoServer): string {
  return `${repo.url}#/i/small`;
}

/**
 * Sets this browser's repository patience (src/app/repo-patience.ts) for pages opened after it:
 * a test of a repository that stays down waits this long instead of the default 45 s.
 */
export async function shortPatience(context: BrowserContext, seconds: number): Promise<void> {
  await context.addInitScript(({ key, s }) => localStorage.setItem(key, String(s)), { key: PATIENCE_KEY, s: seconds });
}

/** The seconds a "could not be reached for N s" message names. */
export function unreachableSeconds(message: string | null): number {
  const m = /could not be reached for (\d+) s/.exec(message ?? "");
  if (!m) throw new Error(`not an outage message: ${message}`);
  return Number(m[1]);
}

/** The serial terminal's visible text. */
export function terminal(page: Page) {
  return page.locator(".terminal .xterm-rows");
}

/**
 * Types a command into the serial terminal and waits until `expected` appears. Commands print a
 * computed marker (e.g. `$((6*7))`) so the echo of the typed line can never satisfy the wait.
 */
export async function run(page: Page, command: string, expected: string | RegExp, timeout?: number): Promise<void> {
  await page.locator(".terminal .xterm-helper-textarea").focus();
  await page.keyboard.type(command + "\n");
  await expect(terminal(page)).toContainText(expected, { timeout });
}

let answers = 0;

/**
 * Runs a command whose output ends in `<tag>-<n>=<value>` and returns the value (matching
 * `pattern`). `n` is new for each call and computed by the guest's shell, so neither an earlier
 * answer (a check polled with the same command) nor the typed line's echo can be read as this one's.
 */
export async function value(page: Page, command: string, tag: string, pattern: string): Promise<string> {
  const n = ++answers;
  const source = `\\b${tag}-${n}=(${pattern})`;
  await run(page, `${command} | sed "s/^/${tag}-$((${n - 1}+1))=/"`, new RegExp(source));
  return new RegExp(source).exec(await terminal(page).innerText())![1]!;
}

let markerCount = 0;

/**
 * Waits until the shell answers, after a cold boot or a resume (which prints no new prompt):
 * types `echo` of a computed marker, again every few seconds (keys typed before the guest's
 * shell opened the serial port are lost), until the marker comes back. Five minutes by default: a
 * cold boot beside another test on a busy 2-core machine has taken three.
 */
export async function waitForShell(page: Page, timeout = 300_000): Promise<void> {
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "running", { timeout });
  const n = ++markerCount;
  const marker = `ready-${n * 1000 + 7}`;
  await expect(async () => {
    if (!(await terminal(page).innerText()).includes(marker)) {
      await page.locator(".terminal .xterm-helper-textarea").focus();
      await page.keyboard.type(`echo ready-$((${n}*1000+7))\n`);
    }
    await expect(terminal(page)).toContainText(marker, { timeout: 5_000 });
  }).toPass({ timeout, intervals: [0] });
}

/** Waits until every change is in a checkpoint, so a reload resumes with it. */
export async function waitForSaved(page: Page): Promise<void> {
  await expect(page.getByTestId("saved")).toHaveAttribute("data-saved", "true", { timeout: 60_000 });
}

/** Ids of the machine's manual checkpoints, as the page knows them (cards exist only in view). */
const manualIds = (page: Page) =>
  page.evaluate(() => {
    const s = (window as unknown as { sandglass: { timeline: { checkpoints: { id: string; auto: boolean }[] } | null } }).sandglass;
    return (s.timeline?.checkpoints ?? []).filter((c) => !c.auto).map((c) => c.id);
  });

/** Clicks "Checkpoint", waits for it on the timeline and for its card in view; returns its id. */
export async function checkpoint(page: Page): Promise<string> {
  const known = new Set(await manualIds(page));
  await page.getByRole("button", { name: "Checkpoint" }).click();
  let id = "";
  await expect
    .poll(async () => {
      id = (await manualIds(page)).find((i) => !known.has(i)) ?? "";
      return id;
    })
    .not.toBe("");
  await expect(page.locator(`[data-testid="point"][data-id="${id}"]`)).toBeInViewport();
  return id;
}

/** Resolves after the page has drawn twice: scroll events fired and the strip's cards re-rendered. */
const settled = (page: Page) =>
  page.evaluate(() => new Promise<void>((ok) => requestAnimationFrame(() => requestAnimationFrame(() => ok()))));

/**
 * Scrolls the timeline strip from its start, as a person would, until the point is shown; clicks it.
 * Only the cards in view are in the DOM, so a card found can be re-rendered away before the click
 * lands (a scroll not drawn yet, a refresh): every action has a short timeout and the search goes on.
 */
export async function clickPoint(page: Page, selector: string): Promise<void> {
  const strip = page.getByTestId("strip");
  await strip.evaluate((el) => (el.scrollLeft = 0));
  await settled(page);
  for (let i = 0; i < 400; i++) {
    const target = strip.locator(selector).first();
    if ((await target.count()) > 0) {
      try {
        await target.click({ timeout: 5_000 });
        return;
      } catch {
        // Drawn away meanwhile: look again from where the strip is now.
      }
    } else {
      await strip.evaluate((el) => (el.scrollLeft += el.clientWidth / 2));
    }
    await settled(page);
  }
  throw new Error(`no timeline point matches ${selector}`);
}

/**
 * How many records the page's IndexedDB holds in the stores an import touches. Chunks in
 * `ignoreChunks` are not counted: the open machine's own image caches those whenever its guest
 * (or a prefetch behind it) reads the disk, which has nothing to do with an import.
 */
export async function storageCounts(
  p: Page,
  ignoreChunks: ReadonlySet<string> = new Set(),
): Promise<{ chunks: number; manifests: number; machines: number; remotePins: number }> {
  return p.evaluate(async (ignore) => {
    const db = await new Promise<IDBDatabase>((ok, fail) => {
      const r = indexedDB.open("sandglass");
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    const count = (name: string) =>
      new Promise<number>((ok, fail) => {
        const r = db.transaction(name).objectStore(name).count();
        r.onsuccess = () => ok(r.result);
        r.onerror = () => fail(r.error);
      });
    const chunkKeys = await new Promise<IDBValidKey[]>((ok, fail) => {
      const r = db.transaction("chunks").objectStore("chunks").getAllKeys();
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    const skip = new Set(ignore);
    const counts = {
      chunks: chunkKeys.filter((k) => !skip.has(String(k))).length,
      manifests: await count("manifests"),
      machines: await count("machines"),
      remotePins: await count("remotePins"),
    };
    db.close();
    return counts;
  }, [...ignoreChunks]);
}

/**
 * The hashes of the chunks a machine of image `name` of the test repository may cache: the
 * image's and its booted snapshot's (storageCounts leaves them out).
 */
export async function imageChunkHashes(name: string, root = REPO_ROOT): Promise<Set<string>> {
  const hashes = new Set<string>();
  const add = async (kind: "image" | "snapshot", manifestName: string) => {
    const manifest = JSON.parse(await readFile(join(root, manifestPath(kind, manifestName)), "utf8")) as DiskManifest;
    for (const ref of manifest.chunks) if (ref) hashes.add(chunkHash(ref));
    return manifest;
  };
  const image = await add("image", name);
  if (image.booted) await add("snapshot", image.booted);
  return hashes;
}

// ── Images a person brings (own-image.spec.ts, url-image.spec.ts) ─────────────────────────────

/**
 * "Download as file" in the open share dialog: saves the point as a `.sandglass` file in the
 * test's output folder and returns its path.
 */
export async function downloadFile(page: Page, timeout = 300_000): Promise<string> {
  const downloading = page.waitForEvent("download", { timeout });
  await page.getByTestId("export-file").click();
  const download = await downloading;
  const file = test.info().outputPath(download.suggestedFilename());
  await download.saveAs(file);
  return file;
}

/**
 * Opens a `.sandglass` file in another browser context (another person's browser: empty storage),
 * as they would: the app first, then "Open file…". Runs `check` once the machine runs there, and
 * closes the context.
 */
export async function openFileElsewhere(browser: Browser, repo: RepoServer, file: string, check: (page: Page) => Promise<void>): Promise<void> {
  const other = await browser.newContext();
  try {
    const b = await other.newPage();
    await b.goto(smallImage(repo));
    await expect(b.getByTestId("status")).toHaveAttribute("data-status", /running|booting/, { timeout: 120_000 });
    await b.getByTestId("file-input").setInputFiles(file);
    await b.waitForURL(/#\/s\/[a-z2-7]{26}$/);
    await expect(b.getByTestId("status")).toHaveAttribute("data-status", "running", { timeout: 120_000 });
    await check(b);
  } finally {
    await other.close();
  }
}

/**
 * Waits until the screen shows the test floppy (scripts/test-images/boot-count.asm) counted `n`
 * boots (the counter it read from the floppy, plus one, written back and read back) and waits for
 * a key. Fails naming the count the screen shows, or the guest's own error.
 */
export async function floppyCount(page: Page, n: number): Promise<void> {
  const screen = page.locator(".screen .text");
  await expect(async () => {
    const text = await screen.innerText();
    const error = /floppy-error: [^\n]*/.exec(text);
    if (error) throw new Error(`the floppy guest says ${error[0]}`);
    const shown = /floppy-boot-count=(\d+)\s+press a key to reboot/.exec(text);
    if (!shown) throw new Error("the floppy guest does not wait for a key");
    if (Number(shown[1]) !== n) throw new Error(`the floppy counted ${shown[1]} boots, not ${n}`);
  }).toPass({ timeout: 120_000 });
}

/**
 * Presses a key for the test floppy, which then resets the machine (through the keyboard
 * controller, as a reset button would) and boots it again: on the serial terminal, or on the
 * screen (the PS/2 keyboard).
 */
export async function rebootFloppy(page: Page, how: "serial" | "keyboard" = "serial"): Promise<void> {
  if (how === "serial") {
    await page.locator(".terminal .xterm-helper-textarea").focus();
    await page.keyboard.type("r");
  } else {
    await page.locator(".screen").click();
    await page.keyboard.press("Enter");
  }
}
