/**
 * The file diff in the page (issue 14's target: a diff on a 1 GiB file system with 100 changed
 * files answers in ≤ 500 ms), on the real Debian guest in Chromium with IndexedDB on disk:
 *
 *   npx tsx scripts/bench/file-diff-page.ts        (after `npm start` or `npm test` built once)
 *
 * A fresh profile opens the Debian machine (its booted snapshot: a 2 GiB disk, ~1.9 GiB root file
 * system with 705 MiB of files), checkpoints, changes 100 files in the guest (40 edited in place
 * across /usr/share/doc, 25 created, 15 removed, 10 chmod'ed, 10 renamed), syncs and checkpoints
 * again; then the two checkpoints are compared as the timeline does (DiskService.filesDiff):
 *   first    right after (the points were never opened; the disk blocks the diff reads that the
 *            guest never read come from the repository, verified and stored)
 *   again    the same diff three times (points open: their block caches warm)
 *   reloaded after a reload (a new worker: nothing open, every block from IndexedDB), three times
 * Each figure is the worker's own time (the `ms` it reports) and the page's round trip through
 * Comlink around it.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { appAnswers, launchWithProfile, startServers, typeApp, waitFor } from "./run.ts";

/** The guest's changes: 100 files, as described above; prints how many paths it touched. */
const CHANGES = [
  "F=$(find /usr/share/doc -name copyright | sort | awk 'NR%4==1' | head -40); for f in $F; do echo edited >> $f; done",
  "mkdir -p /srv/bench; for i in $(seq 1 20); do echo new $i > /srv/bench/new$i.txt; done; for i in $(seq 1 5); do echo conf $i > /etc/bench$i.conf; done",
  "R=$(find /usr/share/man/man1 -name '*.gz' | sort | awk 'NR%5==0' | head -15); rm -f $R",
  "C=$(find /usr/share/doc -name changelog.Debian.gz | sort | awk 'NR%7==0' | head -10); chmod 600 $C",
  "M=$(find /usr/share/man/man8 /usr/share/man/man5 -name '*.gz' | sort | awk 'NR%3==0' | head -10); for f in $M; do mv $f $f.old; done",
  "sync; sleep 1.5; echo touched-$(($(echo $F | wc -w) + 25 + $(echo $R | wc -w) + $(echo $C | wc -w) + $(echo $M | wc -w)))-$((20+5))",
].join("; ");

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

export async function fileDiffPageBench(): Promise<void> {
  const servers = await startServers();
  const profile = await mkdtemp(join(tmpdir(), "sandglass-bench-files-"));
  const context = await launchWithProfile(profile);
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(servers.app.url);
    await appAnswers(page);
    const a = await checkpointNow(page);
    const serial = () => page.locator(".terminal .xterm-rows").innerText();
    await typeApp(page, `${CHANGES}\n`);
    let touched = "";
    await waitFor(
      async () => {
        touched = /touched-(\d+)-25/.exec(await serial())?.[1] ?? "";
        return touched !== "";
      },
      300_000,
      "the guest's changes",
    );
    const b = await checkpointNow(page);
    const rows: string[][] = [];
    const first = await diffOnce(page, a, b);
    rows.push(["first (points never opened)", ms(first.worker), ms(first.page), first.phases, String(first.blocks), String(first.changes), first.more]);
    for (let i = 1; i <= 3; i++) {
      const d = await diffOnce(page, a, b);
      rows.push([`again #${i} (points open)`, ms(d.worker), ms(d.page), d.phases, String(d.blocks), String(d.changes), d.more]);
    }
    await page.reload();
    await appAnswers(page);
    for (let i = 1; i <= 3; i++) {
      const d = await diffOnce(page, a, b);
      rows.push([`after a reload #${i}${i === 1 ? " (nothing open)" : ""}`, ms(d.worker), ms(d.page), d.phases, String(d.blocks), String(d.changes), d.more]);
    }
    console.log(`\nIn-page file diff, Debian guest, ${touched} files changed (${new Date().toISOString()})\n`);
    console.log("| diff | worker | page round trip | open / changedBlocks / diff | blocks changed | changes listed | diff reads |\n|---|---|---|---|---|---|---|");
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
