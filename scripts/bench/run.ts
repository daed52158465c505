/**
 * Benchmarks, printed as tables (figures recorded in BENCHMARKS.md). Each table runs Sandglass and
 * its baseline side by side in one run, same image, same machine, headless Chromium.
 *
 *   npm run bench [-- boot|boot-debian|first-visit|baseline-boot|checkpoints|history|dd|rewind|share|import|file-diff|kernel|metadata|all]   (needs `npm start` or `npm test` to have built once)
 *
 * boot     page open → shell answering, and disk bytes fetched: Sandglass cold / warm vs
 *          v86 {buffer} and v86 {url, async: true}; a first visit (booted snapshot) vs v86
 *          resuming the same state with initial_state over HTTP. `boot` on the small image,
 *          `boot-debian` on the Debian one (BENCH_GUEST=debian does the same for every table).
 * history  rewind latency vs history size, dd throughput vs v86's in-memory disk, checkpoint cost
 *          (`dd`: the last two only; `rewind`: the first only).
 * checkpoints  idle and busy checkpoint cost and rewind latency alone, on a machine opened from
 *          the image's booted snapshot (what `boot` measures after its cold boots, in minutes
 *          instead of tens of minutes on Debian; SANDGLASS_APP=<dir> runs another build).
 * share    publishing after a 1 MiB change (time, bytes up) and opening the link (bytes down).
 * import   importing a 1 GiB image file vs reading it alone; memory during a 4 GiB import.
 * file-diff  what changed between two points of a 1 GiB ext4 disk, from the changed blocks vs
 *          walking both listings (Node only; not part of `all`).
 * kernel   the guest's repacked kernel (LZ4, scripts/kernel/) against Debian's own (xz) on the
 *          same disk: cold boots in plain v86 {buffer} and in Sandglass, alternating (not in `all`).
 * metadata  a first `find / -xdev` in the Debian guest, with the file system's metadata fetched in
 *          the background (the manifests' metadataChunks) and from a copy of the repository whose
 *          manifests do not list it, alternating (Debian only; not in `all`).
 */
import { execFileSync, execSync } from "node:child_process";
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { startServer, type RequestRecord, type RunningServer } from "../../server/repo-server.ts";
import { parseManifest } from "../../src/engine/repo-format.ts";
import { importImage } from "../import-image.ts";
import { historyBench } from "./history.ts";
import { importBench } from "./import.ts";
import { urlBootBench } from "./url-boot.ts";
import { shareBench } from "./share.ts";

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-sync",
];
export const PROMPT = "root@sandglass:~# ";
const REPO = resolve(process.env.SANDGLASS_REPO ?? "build/repo");
const MiB = 2 ** 20;

export interface Servers {
  app: RunningServer;
  baseline: RunningServer;
  requests: RequestRecord[];
  /** Disk bytes (chunks or raw image ranges) served since `from`. */
  diskBytes(from: number): number;
  close(): Promise<void>;
}

export async function startServers(): Promise<Servers> {
  const requests: RequestRecord[] = [];
  const onRequest = (r: RequestRecord) => requests.push(r);
  const app = await startServer({ repoRoot: REPO, appRoot: resolve(process.env.SANDGLASS_APP ?? "dist"), onRequest });
  // The baseline page is plain v86 from node_modules, served from a scratch folder.
  const scratch = await mkdtemp(join(tmpdir(), "sandglass-baseline-"));
  await copyFile(resolve("scripts/bench/baseline.html"), join(scratch, "index.html"));
  await copyFile(resolve("node_modules/v86/build/libv86.mjs"), join(scratch, "libv86.mjs"));
  await copyFile(resolve("node_modules/v86/build/v86.wasm"), join(scratch, "v86.wasm"));
  const baseline = await startServer({ repoRoot: REPO, appRoot: scratch, onRequest });
  return {
    app,
    baseline,
    requests,
    diskBytes: (from) =>
      requests
        .slice(from)
        .filter((r) => r.method === "GET" && (r.path.startsWith("/repo/chunks/") || r.path.startsWith("/repo/raw/")))
        .reduce((n, r) => n + r.bytes, 0),
    async close() {
      await app.close();
      await baseline.close();
      await rm(scratch, { recursive: true, force: true });
    },
  };
}

const launchOptions = () => ({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", headless: true, args: CHROMIUM_ARGS });

export function launch(): Promise<Browser> {
  return chromium.launch(launchOptions());
}

/** A browser whose profile is on disk at `dir` (IndexedDB on disk, as a person's is; incognito keeps it in memory). */
export function launchWithProfile(dir: string): Promise<BrowserContext> {
  return chromium.launchPersistentContext(dir, launchOptions());
}

// ── driving the pages ─────────────────────────────────────────────────────────────────────────

const serialOfApp = (page: Page) => page.locator(".terminal .xterm-rows").innerText();

/**
 * Enters text into Sandglass's serial terminal: the line as one input event (as a paste would
 * arrive), then Enter. Key-by-key typing through the DevTools protocol costs a round trip per key,
 * which would be measured as Sandglass's time; the v86 baselines send their line in one call.
 */
export async function typeApp(page: Page, text: string): Promise<void> {
  await page.locator(".terminal .xterm-helper-textarea").focus();
  const lines = text.split("\n");
  for (const [i, line] of lines.entries()) {
    if (line) await page.keyboard.insertText(line);
    if (i < lines.length - 1) await page.keyboard.press("Enter");
  }
}

/**
 * Waits until a computed marker comes back: the shell is answering. Retypes every few seconds:
 * keys sent before the guest's shell opened the serial port are lost.
 */
export async function appAnswers(page: Page, timeoutMs = 240_000): Promise<void> {
  const n = Math.floor(Math.random() * 1e6);
  let typed = 0;
  await waitFor(
    async () => {
      if (Date.now() - typed > 5000) {
        typed = Date.now();
        await typeApp(page, `echo ok-$((${n}+1))\n`);
      }
      return (await serialOfApp(page)).includes(`ok-${n + 1}`);
    },
    timeoutMs,
    "shell answer",
  );
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Opens Sandglass and returns ms until the shell answered. Cold boots wait for the prompt first. */
async function timeApp(page: Page, url: string, expectResume: boolean): Promise<number> {
  const started = Date.now();
  await page.goto(url);
  if (expectResume) {
    await page.locator('[data-testid="status"][data-status="running"]').waitFor({ timeout: 120_000 });
  } else {
    await waitFor(async () => (await serialOfApp(page)).includes(PROMPT), 240_000, "prompt");
  }
  await appAnswers(page);
  return Date.now() - started;
}

/** Opens the plain-v86 page; ms until its shell answered. A resumed state prints no prompt first. */
export async function timeBaseline(page: Page, url: string, resumed = false): Promise<number> {
  const started = Date.now();
  await page.goto(url);
  const error = () => page.evaluate(() => (window as unknown as { benchError: string | null }).benchError);
  if (!resumed) {
    await waitFor(
      async () => {
        const e = await error();
        if (e) throw new Error(e);
        return page.evaluate((p) => (window as unknown as { serialText: string }).serialText.includes(p), PROMPT);
      },
      240_000,
      "baseline prompt",
    );
  }
  let typed = 0;
  await waitFor(
    async () => {
      const e = await error();
      if (e) throw new Error(e);
      if (Date.now() - typed > 2000) {
        typed = Date.now();
        await page.evaluate(() => (window as unknown as { sendSerial?(t: string): void }).sendSerial?.("echo ok-$((40+2))\n"));
      }
      return page.evaluate(() => (window as unknown as { serialText: string }).serialText.includes("ok-42"));
    },
    120_000,
    "baseline answer",
  );
  return Date.now() - started;
}

/** The guest a benchmark runs on: its images, raw file and RAM (BENCH_GUEST=debian, or small). */
export interface Guest {
  label: string;
  /** Image without a booted snapshot (cold boots), and the one with it (first visits). */
  cold: string;
  booted: string;
  /** raw/<raw>.img and raw/<raw>-booted.state, for the v86 baseline. */
  raw: string;
  memoryMiB: number;
  /** The baseline page's query for the same machine. */
  baselineQuery: string;
  /** A command that keeps the guest busy, for the cost of a checkpoint taken right after it. */
  busy: string;
  /**
   * The dd bench resumes the booted state in every page instead of cold-booting each (a Debian
   * cold boot takes over a minute, three per round).
   */
  ddFromBooted: boolean;
}

export function guestOf(name = process.env.BENCH_GUEST ?? "small"): Guest {
  return name === "debian"
    ? {
        label: "Debian",
        cold: "debian-cold",
        booted: "default",
        raw: "default",
        memoryMiB: 256,
        baselineQuery: "image=default&memory=256&vga=2&devices=1",
        busy: `printf '#include <stdio.h>\\nint main(void){puts("hi");return 0;}\\n' > /root/b.c && gcc -O2 -o /root/b /root/b.c && /root/b`,
        ddFromBooted: true,
      }
    : {
        label: "small busybox",
        cold: "plain",
        booted: "small",
        raw: "small",
        memoryMiB: 64,
        baselineQuery: "image=small&memory=64",
        busy: "dd if=/dev/urandom of=/root/b bs=64k count=16 2>/dev/null; sync",
        ddFromBooted: false,
      };
}

// ── tables ────────────────────────────────────────────────────────────────────────────────────

export function table(title: string, head: string[], rows: (string | number)[][]): void {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const widths = head.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => "| " + r.map((c, i) => c.padEnd(widths[i]!)).join(" | ") + " |";
  console.log(`\n${title}\n`);
  console.log(line(head));
  console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
  for (const r of cells.slice(1)) console.log(line(r));
}

const secs = (ms: number) => (ms / 1000).toFixed(1) + " s";
/** The middle value (the upper one of an even count). */
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mib = (b: number) => (b / MiB).toFixed(1) + " MiB";

/** The size of the guest's raw image, the base of every "share of image" column. */
async function rawImageBytes(servers: Servers, guest: Guest): Promise<number> {
  const head = await fetch(new URL(`repo/raw/${guest.raw}.img`, servers.app.url), { method: "HEAD" });
  return Number(head.headers.get("content-length"));
}

async function bootBench(browser: Browser, servers: Servers, guest: Guest): Promise<void> {
  const rows: (string | number)[][] = [];
  const imageBytes = await rawImageBytes(servers, guest);
  const measure = async (name: string, run: () => Promise<number>) => {
    const from = servers.requests.length;
    const ms = await run();
    const bytes = servers.diskBytes(from);
    rows.push([name, secs(ms), mib(bytes), ((100 * bytes) / imageBytes).toFixed(1) + " %"]);
    console.log(`  ${name}: ${secs(ms)}, ${mib(bytes)}`);
  };

  const sandglass = await browser.newContext();
  let page = await sandglass.newPage();
  // The image without a booted snapshot, so these boot the kernel like v86 does.
  await measure("(a) Sandglass cold (empty IndexedDB)", () => timeApp(page, `${servers.app.url}#/i/${guest.cold}`, false));
  await page.close();
  // A new machine of the same image in the same browser: cold boot, every chunk already local.
  page = await sandglass.newPage();
  await measure("(b) Sandglass warm (cold boot, chunks local)", () => timeApp(page, `${servers.app.url}#/new/${guest.cold}`, false));
  await page.close();
  // Reopening a machine that ran: it resumes its newest checkpoint (what a returning person gets).
  page = await sandglass.newPage();
  await page.goto(`${servers.app.url}#/i/${guest.cold}`);
  await appAnswers(page);
  await page.locator('button:has-text("Checkpoint")').click();
  await page.locator('[data-testid="point"][data-kind="checkpoint"]').first().waitFor();
  await page.locator('[data-testid="saved"][data-saved="true"]').waitFor({ timeout: 60_000 });
  await page.close();
  page = await sandglass.newPage();
  await measure("(b') Sandglass warm (resume checkpoint)", () => timeApp(page, `${servers.app.url}#/i/${guest.cold}`, true));
  await checkpointBench(page, guest);
  await sandglass.close();

  await firstVisits(browser, servers, guest, measure);

  await baselineBoots(browser, guest, servers.baseline.url, measure);
  table(
    `Boot, ${guest.label}: page open → shell answering (image ${mib(imageBytes)}, ${guest.memoryMiB} MiB RAM)`,
    ["Scenario", "Time", "Disk bytes fetched", "Share of image"],
    rows,
  );
}

/** `checkpoints`: the checkpoint and rewind table alone, on a first visit's machine (booted snapshot). */
async function checkpointsBench(browser: Browser, servers: Servers, guest: Guest): Promise<void> {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const ms = await timeApp(page, `${servers.app.url}#/i/${guest.booted}`, true);
    console.log(`  first visit (booted snapshot): ${secs(ms)}`);
    await checkpointBench(page, guest, 6);
  } finally {
    await context.close();
  }
}

/** `baseline-boot`: rows (c) and (d) alone (the long Sandglass rows are in `boot`). */
async function baselineBootBench(browser: Browser, servers: Servers, guest: Guest): Promise<void> {
  const rows: (string | number)[][] = [];
  const imageBytes = await rawImageBytes(servers, guest);
  await baselineBoots(browser, guest, servers.baseline.url, async (name, run) => {
    const from = servers.requests.length;
    const ms = await run();
    const bytes = servers.diskBytes(from);
    rows.push([name, secs(ms), mib(bytes), ((100 * bytes) / imageBytes).toFixed(1) + " %"]);
    console.log(`  ${name}: ${secs(ms)}, ${mib(bytes)}`);
  });
  table(`Boot, ${guest.label}, plain v86 (image ${mib(imageBytes)}, ${guest.memoryMiB} MiB RAM)`, ["Scenario", "Time", "Disk bytes fetched", "Share of image"], rows);
}

/**
 * `kernel`: the guest's raw disk as built (its kernel repacked as LZ4) against the same disk with
 * Debian's own kernel (xz) put back in its boot partition: cold boots in plain v86 {buffer} and in
 * Sandglass (a fresh profile, the disk imported as an image without a booted snapshot),
 * alternating, BENCH_ROUNDS rounds (3). The xz disk's manifest is removed afterwards; its few
 * chunks that differ (the kernel's) stay in the repository until a sweep.
 */
async function kernelBench(browser: Browser, servers: Servers, guest: Guest): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const deb = (await readdir("build/debs")).filter((f) => /^linux-image-[0-9].*-686_.*_i386\.deb$/.test(f)).sort().at(-1);
  if (!deb) throw new Error("no linux-image .deb in build/debs: build the guest images first");
  const work = await mkdtemp(join(tmpdir(), "bench-kernel-"));
  const xzName = `${guest.raw}-xz-kernel`;
  const xzImage = join(REPO, "raw", `${xzName}.img`);
  try {
    execSync(`dpkg-deb --fsys-tarfile build/debs/${deb} | tar -xO --wildcards './boot/vmlinuz-*' > ${join(work, "vmlinuz")}`);
    execFileSync("cp", ["--sparse=always", join(REPO, "raw", `${guest.raw}.img`), xzImage]);
    // The boot partition starts at 1 MiB (scripts/image-lib.sh).
    execFileSync("mcopy", ["-o", "-i", `${xzImage}@@1M`, join(work, "vmlinuz"), "::/vmlinuz"], { env: { ...process.env, MTOOLS_SKIP_CHECK: "1" } });
    // Imported as the cold image was, in the same machine shape.
    const { hardware } = parseManifest(JSON.parse(await readFile(join(REPO, "images", `${guest.cold}.json`), "utf8")));
    await importImage({ image: xzImage, repo: REPO, name: xzName, ...(hardware ? { hardware } : {}) });
    const rows: string[][] = [];
    const times: Record<string, number[]> = {};
    const label = { xz: `Debian's (xz, ${deb.split("_")[1]})`, lz4: "repacked (LZ4)" };
    for (let round = 1; round <= rounds; round++) {
      for (const kind of ["xz", "lz4"] as const) {
        for (const where of ["v86 {buffer}", "Sandglass cold"] as const) {
          const context = await browser.newContext();
          const p = await context.newPage();
          const ms =
            where === "v86 {buffer}"
              ? await timeBaseline(p, `${servers.baseline.url}?mode=buffer&${guest.baselineQuery.replace(`image=${guest.raw}`, `image=${kind === "xz" ? xzName : guest.raw}`)}`)
              : await timeApp(p, `${servers.app.url}#/i/${kind === "xz" ? xzName : guest.cold}`, false);
          await context.close();
          (times[`${where} ${kind}`] ??= []).push(ms);
          rows.push([String(round), where, label[kind], secs(ms)]);
          console.log(`  round ${round}, ${where}, ${label[kind]}: ${secs(ms)}`);
        }
      }
    }
    for (const where of ["v86 {buffer}", "Sandglass cold"]) {
      rows.push(["median", where, "xz → LZ4", `${secs(median(times[`${where} xz`]!))} → ${secs(median(times[`${where} lz4`]!))}`]);
    }
    table(`Cold boot, ${guest.label}: page open → shell answering, by kernel (${guest.memoryMiB} MiB RAM)`, ["Round", "Page", "Kernel", "Time"], rows);
  } finally {
    await rm(work, { recursive: true, force: true });
    await rm(xzImage, { force: true });
    await rm(join(REPO, "images", `${xzName}.json`), { force: true });
  }
}

/**
 * `metadata`: a fresh profile opens Debian (booted snapshot) and, 45 s after `goto` (time for the
 * background fetch, measured too), runs a first `find / -xdev`: from the repository as built, and
 * from a copy of it (hard links) whose image and snapshot manifests leave `metadataChunks` out.
 * BENCH_ROUNDS rounds (2), alternating.
 */
async function metadataBench(browser: Browser, servers: Servers): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
  const guest = guestOf("debian");
  const work = await mkdtemp(join(tmpdir(), "bench-metadata-"));
  const bare = join(work, "repo");
  execFileSync("cp", ["-al", REPO, bare]);
  const image = JSON.parse(await readFile(join(REPO, "images", `${guest.booted}.json`), "utf8")) as { booted: string; metadataChunks?: number[] };
  if (!image.metadataChunks) throw new Error(`images/${guest.booted}.json lists no metadataChunks: build the guest images first`);
  for (const path of [`images/${guest.booted}.json`, `snapshots/${image.booted}.json`]) {
    const { metadataChunks: _, ...rest } = JSON.parse(await readFile(join(REPO, path), "utf8")) as Record<string, unknown>;
    await rm(join(bare, path)); // a hard link: the built repository's file must stay as it is
    await writeFile(join(bare, path), JSON.stringify(rest) + "\n");
  }
  const requests: RequestRecord[] = [];
  const without = await startServer({ repoRoot: bare, appRoot: resolve(process.env.SANDGLASS_APP ?? "dist"), onRequest: (r) => requests.push(r) });
  const chunkRequests = (list: RequestRecord[], from: number) => list.slice(from).filter((r) => r.path.startsWith("/repo/chunks/"));
  const rows: string[][] = [];
  const times: Record<string, number[]> = {};
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const kind of ["listed", "not listed"] as const) {
        const [url, log] = kind === "listed" ? [servers.app.url, servers.requests] : [without.url, requests];
        const context = await browser.newContext();
        const page = await context.newPage();
        const from = log.length;
        const opened = Date.now();
        await page.goto(`${url}#/i/${guest.booted}`);
        await appAnswers(page);
        type Progress = { chunks: number; fetched: number; stopped?: boolean } | undefined;
        const progress = () => page.evaluate(() => (window as unknown as { sandglass: { transfer: { metadata?: Progress } } }).sandglass.transfer.metadata);
        let metadataDone = "";
        if (kind === "listed") {
          await waitFor(async () => ((p) => !!p && (p.stopped || p.fetched === p.chunks))(await progress()), 180_000, "the metadata");
          const p = (await progress())!;
          metadataDone = `${p.chunks} chunks, done ${secs(Date.now() - opened)} after goto${p.stopped ? " (stopped)" : ""}`;
        }
        await new Promise((ok) => setTimeout(ok, Math.max(0, opened + 45_000 - Date.now())));
        const before = chunkRequests(log, from).length;
        const fetchedBefore = chunkRequests(log, from).reduce((n, r) => n + r.bytes, 0);
        const n = Math.floor(Math.random() * 1e6);
        const started = Date.now();
        await typeApp(page, `find / -xdev | wc -l | sed "s/^/found-$((${n}+1))=/"\n`);
        await waitFor(async () => (await serialOfApp(page)).includes(`found-${n + 1}=`), 300_000, "find");
        const ms = Date.now() - started;
        const during = chunkRequests(log, from).length - before;
        await context.close();
        (times[kind] ??= []).push(ms);
        rows.push([String(round), kind, metadataDone || "-", mib(fetchedBefore), secs(ms), String(during)]);
        console.log(`  round ${round}, metadata ${kind}: find ${secs(ms)}, ${during} chunk requests during it; ${mib(fetchedBefore)} fetched before it ${metadataDone}`);
      }
    }
    rows.push(["median", "listed / not listed", "", "", `${secs(median(times.listed!))} / ${secs(median(times["not listed"]!))}`, ""]);
    table(
      `A first find / -xdev in ${guest.label} (fresh profile, 45 s after goto), with and without the metadata in the background`,
      ["Round", "metadataChunks", "Background fetch", "Chunk bytes before find", "find", "Chunk requests during find"],
      rows,
    );
  } finally {
    await without.close();
    await rm(work, { recursive: true, force: true });
  }
}

/** Rows (c) and (d): plain v86 cold-booting the same image, from memory and from its lazy HTTP disk. */
async function baselineBoots(
  browser: Browser,
  guest: Guest,
  baselineUrl: string,
  measure: (name: string, run: () => Promise<number>) => Promise<void>,
): Promise<void> {
  for (const [name, mode] of [
    ["(c) v86 {buffer}", "buffer"],
    ["(d) v86 {url, async: true}", "async"],
  ] as const) {
    const context = await browser.newContext();
    const p = await context.newPage();
    await measure(name, () => timeBaseline(p, `${baselineUrl}?mode=${mode}&${guest.baselineQuery}`));
    await context.close();
  }
}

/**
 * A new visitor, a fresh browser profile each: Sandglass resuming the image's booted snapshot,
 * then plain v86 resuming the same state (initial_state over HTTP, lazy range disk), `rounds` times.
 */
async function firstVisits(
  browser: Browser,
  servers: Servers,
  guest: Guest,
  measure: (name: string, run: () => Promise<number>) => Promise<void>,
  rounds = 1,
): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    for (const [name, resumeBaseline] of [
      ["(e) Sandglass first visit, booted snapshot", false],
      ["(f) v86 initial_state {url} + {url, async: true} disk, same state", true],
    ] as const) {
      const visitor = await browser.newContext();
      const page = await visitor.newPage();
      await measure(name, () =>
        resumeBaseline
          ? timeBaseline(page, `${servers.baseline.url}?mode=state&${guest.baselineQuery}`, true)
          : timeApp(page, `${servers.app.url}#/i/${guest.booted}`, true),
      );
      await visitor.close();
    }
  }
}

/** `first-visit`: rows (e) and (f) alone, three rounds alternating. */
async function firstVisitBench(browser: Browser, servers: Servers, guest: Guest): Promise<void> {
  const rows: (string | number)[][] = [];
  const imageBytes = await rawImageBytes(servers, guest);
  await firstVisits(
    browser,
    servers,
    guest,
    async (name, run) => {
      const from = servers.requests.length;
      const ms = await run();
      const bytes = servers.requests.slice(from).filter((r) => r.path.startsWith("/repo/")).reduce((n, r) => n + r.bytes, 0);
      rows.push([name, secs(ms), mib(bytes), ((100 * bytes) / imageBytes).toFixed(2) + " %"]);
      console.log(`  ${name}: ${secs(ms)}, ${mib(bytes)}`);
    },
    3,
  );
  table(
    `First visit, ${guest.label}: page open in a fresh profile → shell answering (image ${mib(imageBytes)}, ${guest.memoryMiB} MiB RAM)`,
    ["Scenario", "Time", "Repository bytes (state, manifests, chunks)", "Share of image"],
    rows,
  );
}

/** Idle checkpoint cost and rewind latency (click → shell answering) on a running machine. */
async function checkpointBench(page: Page, guest: Guest, rewinds = 3): Promise<void> {
  const rows: (string | number)[][] = [];
  const manual = page.locator('[data-testid="point"][data-kind="checkpoint"][data-auto="false"]');
  const costs: string[] = [];
  for (let i = 0; i < 3; i++) {
    const before = await manual.count();
    await page.getByRole("button", { name: "Checkpoint" }).click();
    await waitFor(async () => (await manual.count()) > before, 60_000, "checkpoint");
    costs.push(await page.getByTestId("checkpoint-cost").innerText());
    await new Promise((r) => setTimeout(r, 1500));
  }
  for (const c of costs) rows.push(["idle checkpoint", c.replace("last checkpoint: ", "")]);
  // Busy: a checkpoint right after a command that worked the guest (the Debian one compiles C).
  const marker = Math.floor(Math.random() * 1e6);
  await typeApp(page, `${guest.busy}; echo busy-$((${marker}+1))\n`);
  await waitFor(async () => (await serialOfApp(page)).includes(`busy-${marker + 1}`), 180_000, "busy command");
  // Its card may not be the newest shown (an automatic one can land first): wait for its cost.
  const cost = page.getByTestId("checkpoint-cost");
  const previous = await cost.innerText();
  await page.getByRole("button", { name: "Checkpoint" }).click();
  await waitFor(async () => (await cost.innerText()) !== previous, 120_000, "checkpoint");
  rows.push([`checkpoint after: ${guest.busy.length > 60 ? guest.busy.slice(0, 57) + "…" : guest.busy}`, (await page.getByTestId("checkpoint-cost").innerText()).replace("last checkpoint: ", "")]);
  const target = await manual.first().getAttribute("data-id");
  for (let i = 0; i < rewinds; i++) {
    const { totalMs: ms, waitedMs } = await timeRewind(page, `[data-testid="point"][data-id="${target}"]`);
    // A checkpoint under way (one the timer started) is waited for: said, as it is not the rewind's own time.
    const waited = waitedMs > 5 ? ` (${waitedMs} ms of it waiting for a checkpoint under way)` : "";
    rows.push([`rewind to checkpoint (${await page.getByTestId("point").count()} points)`, `${ms} ms click → shell answering${waited}`]);
  }
  // The same rewind clicked while an automatic checkpoint is stored: a command wrote to the disk,
  // the guest settled, and the session's timer started one (what a person clicking a card right
  // after a command meets).
  for (let i = 0; i < rewinds; i++) {
    const n = Math.floor(Math.random() * 1e6);
    await typeApp(page, `dd if=/dev/urandom of=/root/storing bs=64k count=16 2>/dev/null; sync; echo stored-$((${n}+1))\n`);
    await waitFor(async () => (await serialOfApp(page)).includes(`stored-${n + 1}`), 60_000, "write");
    const { totalMs: ms, waitedMs, storing } = await timeRewind(page, `[data-testid="point"][data-id="${target}"]`, true);
    // The page waits only until that checkpoint's state is posted to the worker (session.svelte.ts rewindTo).
    const when = storing ? "" : "; NOT during the store: the checkpoint had ended";
    rows.push(["rewind while an automatic checkpoint is stored", `${ms} ms click → shell answering (${waitedMs} ms of it waiting for its state to be posted${when})`]);
  }
  table(`Checkpoints on an idle machine, ${guest.label} (${guest.memoryMiB} MiB RAM)`, ["Measure", "Figure"], rows);
}

/**
 * Rewinds the running machine and times, inside the page, until the shell echoes a computed marker
 * typed once the machine runs again: no DevTools round trip or polling interval is counted.
 * `selector`: the timeline card to click; null calls the session's rewindTo (what that click
 * calls) with `window.benchTarget`, for histories whose card may not be in the DOM.
 * Returns ms for the whole, and until the machine ran again ("restore"); `storing`: the automatic
 * checkpoint waited for was still under way when the rewind was asked for.
 */
export async function timeRewind(
  page: Page,
  selector: string | null,
  whileStoring = false,
): Promise<{ totalMs: number; restoreMs: number; waitedMs: number; storing: boolean }> {
  return page.evaluate(async ({ sel, storing }) => {
    const w = window as unknown as { sandglass: any; benchTarget: unknown };
    const s = w.sandglass;
    if (storing) {
      // The session's automatic checkpoint starts (a second after the guest settled): once its
      // pause (save_state, one task) is over, its store goes on while the rewind is asked for.
      const until = performance.now() + 60_000;
      while (!s.busy && performance.now() < until) await new Promise((r) => setTimeout(r, 1));
      if (!s.busy) throw new Error("no automatic checkpoint started");
      await new Promise((r) => setTimeout(r, 0));
    }
    const n = Math.floor(Math.random() * 1e6);
    const line = `echo ok-$((${n}+1))\n`;
    const decoder = new TextDecoder();
    let seen = "";
    let answered!: () => void;
    const answer = new Promise<void>((resolve) => (answered = resolve));
    const stop = s.onSerial(
      (bytes: Uint8Array) => {
        seen += decoder.decode(bytes, { stream: true });
        if (seen.includes(`ok-${n + 1}`)) answered();
      },
      () => undefined,
    );
    const busy = s.busy;
    const started = performance.now();
    if (sel === null) {
      await s.rewindTo(w.benchTarget);
    } else {
      (document.querySelector(sel) as HTMLElement).click();
      // Wait until the machine has left "running" for the rewind and come back to it.
      // (No named functions in here: tsx would wrap them in a helper the page does not have.)
      const deadline = performance.now() + 2000;
      while (s.status === "running" && performance.now() < deadline) await new Promise((r) => setTimeout(r, 2));
      if (s.status === "running") throw new Error("the click did not start a rewind");
      while (s.status !== "running") await new Promise((r) => setTimeout(r, 2));
    }
    const restoreMs = performance.now() - started;
    s.sendSerial(line);
    const retry = setInterval(() => s.sendSerial(line), 5000); // a line typed too early is lost
    await answer;
    clearInterval(retry);
    stop();
    return { totalMs: Math.round(performance.now() - started), restoreMs: Math.round(restoreMs), waitedMs: Math.round(s.debug.lastRewindWaitMs ?? -1), storing: busy };
  }, { sel: selector, storing: whileStoring });
}

async function main(): Promise<void> {
  const which = process.argv[2] ?? "all";
  // The file diff runs in Node alone (a Disk on fake-indexeddb, imported only then): no server,
  // no browser.
  if (which === "file-diff") return (await import("./file-diff.ts")).fileDiffBench();
  const servers = await startServers();
  const browser = await launch();
  try {
    if (which === "boot" || which === "all") await bootBench(browser, servers, guestOf());
    if (which === "boot-debian" || which === "all") await bootBench(browser, servers, guestOf("debian"));
    if (which === "first-visit") await firstVisitBench(browser, servers, guestOf());
    if (which === "checkpoints") await checkpointsBench(browser, servers, guestOf());
    if (which === "baseline-boot") await baselineBootBench(browser, servers, guestOf());
    if (which === "kernel") await kernelBench(browser, servers, guestOf());
    if (which === "metadata") await metadataBench(browser, servers);
    if (which === "history" || which === "all") await historyBench(browser, servers, { dd: true, rewind: true });
    if (which === "dd") await historyBench(browser, servers, { dd: true, rewind: false });
    if (which === "rewind") await historyBench(browser, servers, { dd: false, rewind: true });
    if (which === "share" || which === "all") await shareBench(browser, servers);
    if (which === "import" || which === "all") await importBench(servers);
    if (which === "url-boot" || which === "all") await urlBootBench(servers);
  } finally {
    await browser.close();
    await servers.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
