/**
 * The file diff in the page (issue 14's target: a diff on a 1 GiB file system with 100 changed
 * files answers in ≤ 500 ms), on the real Debian guest in Chromium with IndexedDB on disk:
 *
 *   npx tsx scripts/bench/file-diff-page.ts        (after `npm start` or `npm test` built once)
 *
 * A fresh profile opens the Debian machine (its booted snapshot: a 2 GiB disk, ~1.9 GiB root file
 * system with 705 MiB of files); for each scenario below it checkpoints, changes 100 files in the
 * guest, syncs and checkpoints again; then each pair of checkpoints is compared as the timeline
 * does (DiskService.filesDiff):
 *   first    right after (the points were never opened; disk blocks the guest never read come
 *            from the repository, verified and stored)
 *   again    the same diff (points open)
 *   reload   after a reload (a new worker: nothing open, every block from IndexedDB)
 * Each figure is the worker's own time (the `ms` it reports) and the page's round trip through
 * Comlink around it.
 *
 * BENCH_PROFILE=1 also profiles the disk worker (worker-profile.ts) around the first scattered diff
 * and the one after the reload: a .cpuprofile each under /tmp (open in DevTools), and a summary
 * printed: self time by function and category, IndexedDB requests, fetches and hashes counted.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { appAnswers, launchWithProfile, startServers, typeApp, waitFor } from "./run.ts";
import { attachWorker, counters, formatCounters, instrument, profileAround, summarize, workerNow } from "./worker-profile.ts";

/** Profile the worker around the scattered diffs (see the top). */
const PROFILE = process.env.BENCH_PROFILE === "1";

/**
 * The guest's changes, 100 files each; each prints how many files it changed. "scattered": 40
 * edited in place across /usr/share/doc, 25 created, 15 removed, 10 chmod'ed, 10 renamed, all over
 * the tree (the diff must search directories to name files edited in unchanged folders);
 * "clustered": the same kinds of change within five folders (a typical command's footprint).
 */
const SCENARIOS: { name: string; commands: string }[] = [
  {
    name: "scattered",
    commands: [
      "F=$(find /usr/share/doc -name copyright | sort | awk 'NR%4==1' | head -40); for f in $F; do echo edited >> $f; done",
      "mkdir -p /srv/bench; for i in $(seq 1 20); do echo new $i > /srv/bench/new$i.txt; done; for i in $(seq 1 5); do echo conf $i > /etc/bench$i.conf; done",
      "R=$(find /usr/share/man/man1 -name '*.gz' | sort | awk 'NR%5==0' | head -15); rm -f $R",
      "C=$(find /usr/share/doc -name changelog.Debian.gz | sort | awk 'NR%7==0' | head -10); chmod 600 $C",
      "M=$(find /usr/share/man/man8 /usr/share/man/man5 -name '*.gz' | sort | awk 'NR%3==0' | head -10); for f in $M; do mv $f $f.old; done",
      "sync; sleep 1.5; echo touched-NAME-$(($(echo $F | wc -w) + 25 + $(echo $R | wc -w) + $(echo $C | wc -w) + $(echo $M | wc -w)))-$((20+5))",
    ].join("; "),
  },
  {
    name: "clustered",
    commands: [
      "F=$(ls -d /usr/share/man/man1/*.gz | awk 'NR%2==0' | head -40); for f in $F; do echo edited >> $f; done",
      "mkdir -p /srv/clustered; for i in $(seq 1 25); do echo new $i > /srv/clustered/new$i.txt; done",
      "R=$(ls -d /usr/share/man/man8/*.gz | head -15); rm -f $R",
      "C=$(ls -d /usr/share/man/man1/*.gz | awk 'NR%2==1' | head -10); chmod 600 $C",
      "M=$(ls -d /usr/share/man/man5/*.gz | head -10); for f in $M; do mv $f $f.old; done",
      "sync; sleep 1.5; echo touched-NAME-$(($(echo $F | wc -w) + 25 + $(echo $R | wc -w) + $(echo $C | wc -w) + $(echo $M | wc -w)))-$((20+5))",
    ].join("; "),
  },
];

type Point = { branch: number; seq: number; id: string };

async function checkpointNow(page: Page): Promise<Point> {
  return page.evaluate(async () => {
    const s = (window as unknown as { sandglass: { checkpoint(auto: boolean): Promise<{ id: string; branch: number; seq: number }> } }).sandglass;
    const c = await s.checkpoint(false);
    return { branch: c.branch, seq: c.seq, id: c.id };
  });
}

/** One diff from the page: the worker's time, the round trip, and how many changes. */
async function diffOnce(page: Page, a: Point, b: Point): Promise<{ worker: number; page: number; changes: number; phases: string; blocks: number; more: string }> {
  return page.evaluate(
    async ({ a, b }) => {
      type Api = { filesDiff(a: object, b: object): Promise<{ ms: number; changes: unknown[]; phases: { open: number; changedBlocks: number; diff: number }; stats: { changedBlocks: number; nameSearchDirs: number; directoriesCompared: number }; reads: { count: number; bytes: number } }> };
      const api = (window as unknown as { sandglass: { debug: { api: Api } } }).sandglass.debug.api;
      const started = performance.now();
      const diff = await api.filesDiff(a, b);
      const p = diff.phases;
      return { worker: diff.ms, page: performance.now() - started, changes: diff.changes.length, phases: `${Math.round(p.open)} / ${Math.round(p.changedBlocks)} / ${Math.round(p.diff)} ms`, blocks: diff.stats.changedBlocks, more: `${diff.reads.count} reads, ${(diff.reads.bytes / 2 ** 20).toFixed(1)} MiB, ${diff.stats.nameSearchDirs} dirs searched, ${diff.stats.directoriesCompared} compared` };
    },
    { a, b },
  );
}

const ms = (n: number) => `${Math.round(n)} ms`;

/** The worker's transfer counters (chunks from the network, from IndexedDB). */
async function transferStats(page: Page): Promise<{ networkChunks: number; cacheChunks: number }> {
  return page.evaluate(async () => {
    const api = (window as unknown as { sandglass: { debug: { api: { stats(): Promise<{ networkChunks: number; cacheChunks: number }> } } } }).sandglass.debug.api;
    return api.stats();
  });
}

/** diffOnce, profiled (BENCH_PROFILE=1): the profile goes to /tmp, a summary to the console. */
async function profiledDiff(page: Page, a: Point, b: Point, label: string): Promise<Awaited<ReturnType<typeof diffOnce>>> {
  if (!PROFILE) return diffOnce(page, a, b);
  const worker = await attachWorker(page, "disk.worker");
  try {
    await instrument(worker, process.env.BENCH_STACKS === "1");
    await counters(worker, true);
    const before = await transferStats(page);
    const file = `/tmp/h14-${label}-${Date.now()}.cpuprofile`;
    const t0 = await workerNow(worker);
    const { result, profile } = await profileAround(worker, file, () => diffOnce(page, a, b));
    const after = await transferStats(page);
    const c = await counters(worker, true);
    // The requests on the diff's timeline (ms from just before the call), for reading by hand.
    await writeFile(file.replace(".cpuprofile", ".requests.tsv"), c.log.map(([k, s, e, x]) => `${(s - t0).toFixed(1)}\t${(e - t0).toFixed(1)}\t${k}\t${x}`).join("\n"));
    console.log(`\n── profile of the ${label} diff (${file}) ──`);
    console.log(`worker ${ms(result.worker)}, ${result.phases}, ${result.more}`);
    console.log(`chunks: ${after.networkChunks - before.networkChunks} from the network, ${after.cacheChunks - before.cacheChunks} from IndexedDB`);
    console.log(formatCounters(c));
    console.log(summarize(profile));
    return result;
  } finally {
    await worker.detach();
  }
}

export async function fileDiffPageBench(): Promise<void> {
  const servers = await startServers();
  const profile = await mkdtemp(join(tmpdir(), "sandglass-bench-files-"));
  const context = await launchWithProfile(profile);
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(servers.app.url);
    await appAnswers(page);
    const serial = () => page.locator(".terminal .xterm-rows").innerText();
    const pairs: { name: string; a: Point; b: Point; touched: string }[] = [];
    for (const scenario of SCENARIOS) {
      const a = await checkpointNow(page);
      await typeApp(page, `${scenario.commands.replace("NAME", scenario.name)}\n`);
      const answer = new RegExp(`touched-${scenario.name}-(\\d+)-25`);
      let touched = "";
      await waitFor(
        async () => {
          touched = answer.exec(await serial())?.[1] ?? "";
          return touched !== "";
        },
        300_000,
        `the guest's ${scenario.name} changes`,
      );
      pairs.push({ name: scenario.name, a, b: await checkpointNow(page), touched });
    }
    const rows: string[][] = [];
    const row = (name: string, label: string, d: Awaited<ReturnType<typeof diffOnce>>) =>
      rows.push([name, label, ms(d.worker), ms(d.page), d.phases, String(d.blocks), String(d.changes), d.more]);
    for (const { name, a, b } of pairs) {
      row(name, "first (points never opened)", name === "scattered" ? await profiledDiff(page, a, b, "scattered-first") : await diffOnce(page, a, b));
      for (let i = 1; i <= 2; i++) row(name, `again #${i} (points open)`, await diffOnce(page, a, b));
    }
    await page.reload();
    await appAnswers(page);
    for (const { name, a, b } of pairs) {
      row(name, "after a reload (nothing open)", name === "scattered" ? await profiledDiff(page, a, b, "scattered-reload") : await diffOnce(page, a, b));
      row(name, "after a reload, again", await diffOnce(page, a, b));
    }
    console.log(`\nIn-page file diff, Debian guest (${pairs.map((p) => `${p.name}: ${p.touched} files changed`).join(", ")}; ${new Date().toISOString()})\n`);
    console.log("| scenario | diff | worker | page round trip | open / changedBlocks / diff | blocks changed | changes listed | diff reads |\n|---|---|---|---|---|---|---|---|");
    for (const r of rows) console.log(`| ${r.join(" | ")} |`);
  } finally {
    await context.close();
    await servers.close();
    await rm(profile, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  fileDiffPageBench().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
