/**
 * Issue 12 (bring your own image), from a URL: a hard disk, a CD and a floppy hosted by a web
 * server on another loopback port (another origin: CORS applies) open with "Open URL…", are read
 * a block at a time with Range requests (never downloaded whole), boot, and get writes,
 * checkpoints, rewind, reload and export like any machine (the floppy writes to itself: it counts
 * its boots). A file that changes on the server is
 * refused with a message while the machine's history still opens; servers without CORS or Range,
 * a missing file and a compressed file each get a message naming the cause, and nothing stored.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { copyFile, readFile, stat, writeFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import { join, resolve } from "node:path";
import type { Page } from "@playwright/test";
import {
  checkpoint,
  clickPoint,
  downloadFile,
  expect,
  floppyCount,
  imageChunkHashes,
  openFileElsewhere,
  rebootFloppy,
  run,
  smallImage,
  storageCounts,
  terminal,
  test,
  waitForSaved,
  waitForShell,
} from "./fixtures.ts";
import { startImageHost, type ImageHost } from "./image-host.ts";

const RAW_DISK = resolve("build/guest/disk.img");
const LIVE_CD = resolve("build/test-images/live.iso");
const FLOPPY = resolve("build/test-images/floppy.img");

let host: ImageHost;

test.beforeAll(async () => {
  host = await startImageHost();
});

test.afterAll(async () => {
  await host.close();
});

/** "Open URL…" with `url` typed into its prompt. */
async function openUrl(page: Page, url: string): Promise<void> {
  page.once("dialog", (d) => void d.accept(url));
  await page.getByTestId("open-url").click();
}

/** Boots what the dialog detected and waits for the new machine's page. */
async function boot(page: Page): Promise<void> {
  await expect(page.getByTestId("import-start")).toHaveText("Boot");
  await page.getByTestId("import-start").click();
  await page.waitForURL(/#\/m\/[0-9a-f-]{36}$/, { timeout: 120_000 });
}

/** How much of a hosted file the page fetched, for the log. */
function fetched(name: string, size: number): string {
  const { bytes, requests } = host.sent(name);
  return `${name}: ${(bytes / 2 ** 20).toFixed(1)} MiB of ${(size / 2 ** 20).toFixed(1)} MiB fetched in ${requests} requests`;
}

test("a hard disk image from a URL boots read by Range, writes, rewinds, reloads, and travels as a file", async ({ page, repo, browser }) => {
  test.setTimeout(15 * 60_000);
  host.put("disk.img", { path: RAW_DISK });
  await page.goto(smallImage(repo));
  await waitForShell(page);
  await openUrl(page, host.url("disk.img"));
  await expect(page.getByTestId("import-detected")).toContainText("hard disk image (MBR), 256.0 MiB");
  await expect(page.getByTestId("import-dialog")).toContainText("a block at a time");
  await page.getByTestId("import-memory").selectOption("64");
  await boot(page);
  await expect(page.getByTestId("machine-name")).toHaveText("disk.img");
  await waitForShell(page, 600_000); // a cold boot of the kernel: minutes on a busy machine
  const booted = host.sent("disk.img");
  console.log(fetched("disk.img", 256 * 2 ** 20));
  // Copy-on-read: booting read a small part of the disk (the image holds 8 MiB of data).
  expect(booted.bytes).toBeGreaterThan(0);
  expect(booted.bytes).toBeLessThan(64 * 2 ** 20);

  await run(page, "echo url-$((6*7)) > /root/url.txt; sync; echo wrote-$((1+1))", "wrote-2");
  const good = await checkpoint(page);
  await run(page, "rm /root/url.txt; sync; test -f /root/url.txt || echo gone-$((2+2))", "gone-4");
  await clickPoint(page, `[data-id="${good}"]`);
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, "cat /root/url.txt", "url-42");
  await waitForSaved(page);
  await page.reload();
  await waitForShell(page);
  await run(page, "cat /root/url.txt; echo again-$((3+3))", "again-6");
  // What was read is kept in this browser: the reload fetched only the one block it checks again.
  expect(host.sent("disk.img").requests - booted.requests).toBeLessThan(40);

  // The file carries the whole disk: what was never read is fetched for it, the dialog showing how
  // far (a link would upload it, so the dialog asks first).
  await page.getByTestId("share-now").click();
  const rest = page.getByTestId("remote-fetch").locator("progress");
  await expect(rest).toHaveAttribute("max", String(256 * 2 ** 20));
  const readAtFirst = Number(await rest.getAttribute("value"));
  await expect.poll(async () => Number((await rest.getAttribute("value")) ?? Infinity)).toBeGreaterThan(readAtFirst);
  await expect(page.getByTestId("share-dialog")).toHaveAttribute("data-phase", "confirm", { timeout: 300_000 });
  await expect(rest).toHaveCount(0);
  await expect(page.getByTestId("export-file")).toContainText(/at most \d+(\.\d)? MiB/);
  const file = await downloadFile(page, 600_000);
  console.log(`after export: ${fetched("disk.img", 256 * 2 ** 20)}`);
  const requests = host.sent("disk.img").requests;
  await openFileElsewhere(browser, repo, file, async (b) => {
    await waitForShell(b);
    await run(b, "cat /root/url.txt; echo there-$((4+4))", "there-8");
  });
  expect(host.sent("disk.img").requests).toBe(requests); // the file is whole: no URL needed
});

test("a CD and a floppy boot from URLs, rewind, reload and travel as files; the floppy writes to itself; the CD changed on the server is refused and its machine's history still opens", async ({ page, repo, browser }) => {
  test.setTimeout(12 * 60_000);
  const cd = test.info().outputPath("live.iso");
  await copyFile(LIVE_CD, cd);
  host.put("live.iso", { path: cd });
  await page.goto(smallImage(repo));
  await waitForShell(page);
  await openUrl(page, host.url("live.iso"));
  await expect(page.getByTestId("import-detected")).toContainText("CD image (ISO 9660), volume SANDGLASS_LIVE");
  await expect(page.getByTestId("import-boot")).toHaveValue("cdrom");
  await boot(page);
  await expect(terminal(page)).toContainText("sandglass-live-cd: booted from the CD", { timeout: 300_000 });
  await waitForShell(page);
  console.log(fetched("live.iso", (await readFile(cd)).length));
  await run(page, "export LIVE=url-$((5*5)); echo set-$((1+2))", "set-3");
  const point = await checkpoint(page);
  await page.reload();
  await waitForShell(page);
  await run(page, "echo $LIVE-$((2*4))", "url-25-8");
  await expect(page.getByTestId("remote-changed")).toHaveCount(0);
  // Rewind: the CD is read-only, so what changes is in memory; the checkpoint brings it back.
  await run(page, "export LIVE=gone; echo $LIVE-$((4*4))", "gone-16");
  await clickPoint(page, `[data-id="${point}"]`);
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, "echo $LIVE-$((3*5))", "url-25-15");
  // As a file: the CD's blocks travel in it, and another browser resumes it without the URL.
  await page.getByTestId("share-now").click();
  await expect(page.getByTestId("share-dialog")).toHaveAttribute("data-phase", "confirm", { timeout: 120_000 });
  const file = await downloadFile(page);
  await page.getByTestId("share-dialog").getByRole("button", { name: "Close" }).click();
  const requests = host.sent("live.iso").requests;
  await openFileElsewhere(browser, repo, file, async (b) => {
    await waitForShell(b);
    await run(b, "echo $LIVE-$((2*9))", "url-25-18");
  });
  expect(host.sent("live.iso").requests).toBe(requests);

  // The server now has another file under the same URL (a new volume name, a new ETag).
  const changed = Buffer.from(await readFile(LIVE_CD));
  changed.write("SANDGLASS_EDIT", 0x8028, "latin1");
  const edited = test.info().outputPath("live-edited.iso");
  await writeFile(edited, changed);
  host.put("live.iso", { path: edited });
  await page.reload();
  await expect(page.getByTestId("remote-changed")).toContainText("has changed since this machine first read it");
  await waitForShell(page);
  await run(page, "echo $LIVE-$((3*3))", "url-25-9");
  const checkpointIds = () =>
    page.evaluate(() =>
      ((window as unknown as { sandglass: { timeline: { checkpoints: { id: string }[] } | null } }).sandglass.timeline?.checkpoints ?? []).map((c) => c.id),
    );
  await expect.poll(checkpointIds).toContain(point);

  // The floppy counts its boots in a sector of itself (each boot reads the counter, writes it back
  // plus one, and shows it). Its writes stay in this browser: the server's file never changes.
  host.put("floppy.img", { path: FLOPPY });
  await openUrl(page, host.url("floppy.img"));
  await expect(page.getByTestId("import-detected")).toContainText("1.44 MB floppy image");
  await expect(page.getByTestId("import-boot")).toHaveValue("fda");
  await boot(page);
  await expect(terminal(page)).toContainText("sandglass-floppy: booted from the floppy", { timeout: 300_000 });
  await floppyCount(page, 1);
  await expect(terminal(page)).toContainText("floppy-boot-count=1");
  // A reset boots again and reads what the first boot wrote.
  await rebootFloppy(page);
  await floppyCount(page, 2);
  page.once("dialog", (d) => void d.accept("counted two"));
  await page.getByRole("button", { name: "Bookmark" }).click();
  await expect(page.locator('[data-testid="point"][data-kind="bookmark"]')).toHaveCount(1);
  await rebootFloppy(page);
  await floppyCount(page, 3);
  await rebootFloppy(page);
  await floppyCount(page, 4);
  // A disk-only rewind to the bookmark: the floppy holds 2 again, and the cold boot counts 3 (not 5).
  page.once("dialog", (d) => void d.accept());
  await clickPoint(page, '[data-testid="point"][data-kind="bookmark"]');
  await expect(terminal(page)).toContainText("cold boot");
  await floppyCount(page, 3);
  await checkpoint(page);
  await page.reload();
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "running", { timeout: 120_000 });
  await floppyCount(page, 3);
  await rebootFloppy(page);
  await floppyCount(page, 4);
  // As a file, which carries the whole floppy (what was never read is fetched for it): another
  // browser resumes at 4 without the URL, and the next boot counts 5.
  await page.getByTestId("share-now").click();
  await expect(page.getByTestId("share-dialog")).toHaveAttribute("data-phase", "confirm", { timeout: 120_000 });
  const floppyFile = await downloadFile(page);
  const floppyRequests = host.sent("floppy.img").requests;
  await openFileElsewhere(browser, repo, floppyFile, async (b) => {
    await floppyCount(b, 4);
    await rebootFloppy(b);
    await floppyCount(b, 5);
  });
  expect(host.sent("floppy.img").requests).toBe(floppyRequests);
  console.log(fetched("floppy.img", (await stat(FLOPPY)).size));
});

test("URLs that cannot be used say why (no CORS, no Range, missing, compressed, not an image) and store nothing", async ({ page, repo }) => {
  const packed = test.info().outputPath("live.iso.gz");
  await writeFile(packed, gzipSync(await readFile(LIVE_CD)));
  const png = test.info().outputPath("cat.png");
  await writeFile(png, Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(65536, 7)]));
  host.put("closed.iso", { path: LIVE_CD, cors: false });
  host.put("whole.iso", { path: LIVE_CD, range: false });
  host.put("live.iso.gz", { path: packed });
  host.put("cat.png", { path: png });
  await page.goto(smallImage(repo));
  await waitForShell(page);
  // The small machine's own disk reads (and their prefetch) cache its image's chunks at any time.
  const own = await imageChunkHashes("small");
  const before = await storageCounts(page, own);
  for (const [url, reason] of [
    [host.url("closed.iso"), "no CORS header"],
    [host.url("whole.iso"), "does not answer HTTP Range requests"],
    [host.url("missing.iso"), "answered HTTP 404"],
    [host.url("live.iso.gz"), "gzip-compressed"],
    [host.url("cat.png"), "it is a PNG picture"],
    ["ftp://127.0.0.1/x.iso", "Only http:// and https://"],
  ] as const) {
    await openUrl(page, url);
    await expect(page.getByTestId("image-error")).toContainText(reason);
    await expect(page.getByTestId("import-dialog")).toHaveCount(0);
  }
  expect(await storageCounts(page, own)).toEqual(before);
  await run(page, "echo still-$((7*6))", "still-42");
});

test("the command-line importer takes a URL too", async () => {
  host.put("cli.iso", { path: LIVE_CD });
  const dir = test.info().outputPath("repo");
  // Not execFileSync: the host answers from this process's event loop.
  const { stdout: out } = await promisify(execFile)("npx", ["tsx", "scripts/import-image.ts", host.url("cli.iso"), "--name", "live", "--repo", dir], { encoding: "utf8" });
  expect(out).toContain('image "live"');
  const manifest = JSON.parse(await readFile(join(dir, "images/live.json"), "utf8")) as { hardware?: { bootDevice?: string }; sha256: string };
  expect(manifest.hardware?.bootDevice).toBe("cdrom");
  const { createHash } = await import("node:crypto");
  expect(manifest.sha256).toBe(createHash("sha256").update(await readFile(LIVE_CD)).digest("hex"));
});
