/**
 * Importing a person's own image (issue 12): throughput of a 1 GiB file through the disk worker's
 * importer vs reading the same file alone in the same page, and the browser's memory (PSS of all
 * its processes) during a 4 GiB import vs the idle page.
 *
 * The files are synthetic disks: half distinct non-zero chunks (hashed and stored), half zeros
 * (hashed with the rest of the image, skipped), a boot sector at the start.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, open, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { launchWithProfile, type Servers } from "./run.ts";

const MiB = 2 ** 20;

/** A `size`-byte disk image whose first `dataBytes` are distinct data, the rest zeros (sparse). */
async function makeImage(path: string, size: number, dataBytes: number): Promise<void> {
  const handle = await open(path, "w");
  try {
    await handle.truncate(size);
    for (let at = 0; at < dataBytes; at += 16 * MiB) {
      const slice = randomBytes(16 * MiB);
      if (at === 0) slice.set([0x55, 0xaa], 510);
      await handle.write(slice, 0, slice.length, at);
    }
  } finally {
    await handle.close();
  }
}

/** Proportional set size of every process of the browser (so shared pages count once), in bytes, and per process type. */
async function browserPss(byType?: Map<string, number>): Promise<number> {
  let total = 0;
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8");
      // Only the benchmark's browser runs while it measures (run it alone).
      if (!cmd.includes("chromium")) continue;
      const rollup = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
      // Anonymous memory only: file pages (IndexedDB's files, mapped by the browser) can be dropped.
      const pss = Number(/^Pss_Anon:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0) * 1024;
      total += pss;
      const type = /--type=([a-z-]+)/.exec(cmd)?.[1] ?? "browser";
      byType?.set(type, Math.max(byType.get(type) ?? 0, pss));
    } catch {
      // The process ended meanwhile.
    }
  }
  return total;
}

/**
 * A page of the app with a file input the benchmark fills (the import runs through the worker's
 * API), in a fresh profile on disk: an incognito context (Playwright's newContext) keeps
 * IndexedDB in the browser's memory, which is not what a person's browser does.
 */
async function pageWithFile(servers: Servers, path: string): Promise<{ page: Page; close: () => Promise<void> }> {
  const profile = await mkdtemp(join(tmpdir(), "sandglass-bench-profile-"));
  const context = await launchWithProfile(profile);
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${servers.app.url}#/i/small`);
  await page.waitForFunction(() => (window as unknown as { sandglass?: { status: string } }).sandglass?.status === "running", null, { timeout: 180_000 });
  await page.evaluate(() => {
    const input = document.createElement("input");
    input.type = "file";
    input.id = "bench-file";
    document.body.append(input);
  });
  await page.setInputFiles("#bench-file", path);
  return {
    page,
    close: async () => {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Reads the file alone, 8 MiB slices as the importer does; ms. */
const readAlone = (page: Page) =>
  page.evaluate(async () => {
    const file = (document.getElementById("bench-file") as HTMLInputElement).files![0]!;
    const started = performance.now();
    for (let at = 0; at < file.size; at += 8 * 2 ** 20) await file.slice(at, at + 8 * 2 ** 20).arrayBuffer();
    return performance.now() - started;
  });

/** Imports the file through the disk worker; ms. */
const importIt = (page: Page) =>
  page.evaluate(async () => {
    const file = (document.getElementById("bench-file") as HTMLInputElement).files![0]!;
    const api = (window as unknown as { sandglass: { debug: { api: { importImage(f: File, s: object): Promise<string> } } } }).sandglass.debug.api;
    const started = performance.now();
    await api.importImage(file, { bootDevice: "hda", memoryBytes: 64 * 2 ** 20, vgaMemoryBytes: 8 * 2 ** 20 });
    return performance.now() - started;
  });

export async function importBench(servers: Servers): Promise<void> {
  const dir = tmpdir();
  const oneGiB = join(dir, `sandglass-bench-1g-${process.pid}.img`);
  const fourGiB = join(dir, `sandglass-bench-4g-${process.pid}.img`);
  try {
    await makeImage(oneGiB, 1024 * MiB, 512 * MiB);
    console.log("\nImport of a 1 GiB disk image file (512 MiB of distinct data, 512 MiB of zeros), fresh profile on disk per row");
    console.log("row                                   time       rate");
    for (let round = 1; round <= Number(process.env.IMPORT_ROUNDS ?? 2); round++) {
      const { page, close } = await pageWithFile(servers, oneGiB);
      try {
        const read = await readAlone(page);
        const imported = await importIt(page);
        const rate = (ms: number) => `${((1024 / ms) * 1000).toFixed(0).padStart(5)} MiB/s`;
        console.log(`${round}a reading the file alone (page)     ${(read / 1000).toFixed(2).padStart(6)} s  ${rate(read)}`);
        console.log(`${round}b importing it (worker: hash, store) ${(imported / 1000).toFixed(2).padStart(6)} s  ${rate(imported)}  (${((100 * read) / imported).toFixed(0)} % of reading alone)`);
      } finally {
        await close();
      }
    }

    await makeImage(fourGiB, 4096 * MiB, 1024 * MiB);
    console.log("\nMemory of the browser (PSS of all its processes) during a 4 GiB import (1 GiB of data, 3 GiB of zeros)");
    const { page, close } = await pageWithFile(servers, fourGiB);
    try {
      await page.waitForTimeout(3000);
      const idleTypes = new Map<string, number>();
      const idle = await browserPss(idleTypes);
      const peakTypes = new Map<string, number>();
      let peak = idle;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          peak = Math.max(peak, await browserPss(peakTypes));
          await new Promise((r) => setTimeout(r, 250));
        }
      })();
      const ms = await importIt(page);
      sampling = false;
      await sampler;
      console.log(
        `idle page ${(idle / MiB).toFixed(0)} MiB, peak during import ${(peak / MiB).toFixed(0)} MiB: ` +
          `+${((peak - idle) / MiB).toFixed(0)} MiB (import ${(ms / 1000).toFixed(1)} s, ${((4096 / ms) * 1000).toFixed(0)} MiB/s)`,
      );
      const types = [...peakTypes.keys()].map((t) => `${t} ${((idleTypes.get(t) ?? 0) / MiB).toFixed(0)} → ${(peakTypes.get(t)! / MiB).toFixed(0)} MiB`);
      console.log(`largest process of each type, idle → peak: ${types.join(", ")}`);
    } finally {
      await close();
    }
  } finally {
    await rm(oneGiB, { force: true });
    await rm(fourGiB, { force: true });
  }
}
