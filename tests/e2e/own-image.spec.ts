/**
 * Issue 12 (bring your own image), from a file: a raw hard disk, a gzip'd ISO 9660 CD and an xz'd
 * floppy are imported in the page (detected, settings, progress), boot, and get what Sandglass's
 * own images get: writes, checkpoints, rewind, reload, export to a file and import elsewhere. A
 * file that is no image, and an import cancelled halfway, leave nothing in storage.
 *
 * The images are built from Debian packages by scripts/build-test-images.sh (the CD, and the
 * floppy that counts its boots on itself) and scripts/build-image.sh (the hard disk: the small
 * guest's raw disk).
 */
import { execFileSync } from "node:child_process";
import { open, readFile, rm, writeFile } from "node:fs/promises";
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

const RAW_DISK = resolve("build/guest/disk.img");
const LIVE_CD = resolve("build/test-images/live.iso");
const FLOPPY = resolve("build/test-images/floppy.img");

/** Chooses `file` with "Open file…" and waits for the import dialog's settings. */
async function chooseImage(p: Page, file: string | { name: string; mimeType: string; buffer: Buffer }): Promise<void> {
  await p.getByTestId("file-input").setInputFiles(file);
}

/** Imports the chosen file as it was detected and waits for its machine's page. */
async function importAndOpen(p: Page): Promise<void> {
  await p.getByTestId("import-start").click();
  await p.waitForURL(/#\/m\/[0-9a-f-]{36}$/, { timeout: 300_000 });
}

test("a hard disk image from a file boots, writes, checkpoints, rewinds, reloads, and travels as a file", async ({ page, repo, browser }) => {
  test.setTimeout(15 * 60_000);
  await page.goto(smallImage(repo));
  await waitForShell(page);
  const before = await storageCounts(page);
  await chooseImage(page, RAW_DISK);
  await expect(page.getByTestId("import-dialog")).toHaveAttribute("data-phase", "settings");
  await expect(page.getByTestId("import-detected")).toContainText("hard disk image (MBR), 256.0 MiB");
  await expect(page.getByTestId("import-boot")).toHaveValue("hda");
  await page.getByTestId("import-memory").selectOption("64");
  const started = Date.now();
  await importAndOpen(page);
  console.log(`imported the 256 MiB raw disk in ${Date.now() - started} ms`);
  await expect(page.getByTestId("machine-name")).toHaveText("disk.img");
  await waitForShell(page, 600_000); // a cold boot of the kernel: minutes on a busy machine
  const after = await storageCounts(page);
  expect(after.machines).toBe(before.machines + 1);
  expect(after.manifests).toBe(before.manifests + 1);

  await run(page, "echo own-$((6*7)) > /root/own.txt; sync; echo wrote-$((1+1))", "wrote-2");
  const good = await checkpoint(page);
  await run(page, "rm /root/own.txt; sync; test -f /root/own.txt || echo gone-$((2+2))", "gone-4");
  await clickPoint(page, `[data-id="${good}"]`);
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, "cat /root/own.txt", "own-42");
  await waitForSaved(page);
  await page.reload();
  await waitForShell(page);
  await run(page, "cat /root/own.txt; echo again-$((3+3))", "again-6");

  // A link uploads the image too (only this browser has it): how much is said, and nothing goes
  // up before the person agrees. A file carries the image as well.
  const uploads = () => repo.requests.filter((r) => r.method === "PUT").length;
  const putsBefore = uploads();
  await page.getByTestId("share-now").click();
  await expect(page.getByTestId("share-dialog")).toHaveAttribute("data-phase", "confirm", { timeout: 120_000 });
  await expect(page.getByTestId("share-confirm")).toContainText("image you brought");
  await expect(page.getByTestId("share-confirm")).toContainText(/at most \d+(\.\d)? MiB/);
  expect(uploads()).toBe(putsBefore);
  // The file's size is said before it is written (the image's 8.4 MiB of data, the state, changes).
  await expect(page.getByTestId("export-file")).toContainText(/at most \d+(\.\d)? MiB/);
  const file = await downloadFile(page);
  await openFileElsewhere(browser, repo, file, async (b) => {
    await waitForShell(b);
    await run(b, "cat /root/own.txt; echo there-$((4+4))", "there-8");
  });

  await page.getByTestId("share-upload").click();
  await expect(page.getByTestId("share-dialog")).toHaveAttribute("data-phase", "published", { timeout: 300_000 });
  expect(uploads()).toBeGreaterThan(putsBefore + 1);
  const link = await page.getByTestId("share-link").inputValue();
  const third = await browser.newContext();
  try {
    const c = await third.newPage();
    await c.goto(link);
    await waitForShell(c);
    await run(c, "cat /root/own.txt; echo linked-$((5+5))", "linked-10");
  } finally {
    await third.close();
  }
});

test("a gzip'd ISO boots from the CD, rewinds, reloads and travels as a file; an xz'd floppy boots, writes to itself, rewinds, reloads and travels as a file", async ({ page, repo, browser }) => {
  test.setTimeout(12 * 60_000);
  await page.goto(smallImage(repo));
  await waitForShell(page);
  // Compressed, as ISOs are often downloaded: inflated on the way in.
  const packed = test.info().outputPath("live.iso.gz");
  await writeFile(packed, gzipSync(await readFile(LIVE_CD)));
  await chooseImage(page, packed);
  await expect(page.getByTestId("import-detected")).toContainText("CD image (ISO 9660), volume SANDGLASS_LIVE, gzip-compressed");
  await expect(page.getByTestId("import-boot")).toHaveValue("cdrom");
  await importAndOpen(page);
  await expect(terminal(page)).toContainText("sandglass-live-cd: booted from the CD", { timeout: 300_000 });
  await waitForShell(page);
  // The CD is read-only: what the guest writes is in its memory (a shell variable, a file in the
  // initramfs). Seeing it after the reload means the machine resumed.
  await run(page, "export LIVE=cd-$((5*5)); echo kept > /root/cd.txt; grep -c iso9660 /proc/filesystems >/dev/null; echo set-$((1+2))", "set-3");
  const point = await checkpoint(page);
  await page.reload();
  await waitForShell(page);
  await run(page, "echo $LIVE-$((2*4))", "cd-25-8");
  // Rewind: the checkpoint brings back what was in memory.
  await run(page, "export LIVE=gone; rm /root/cd.txt; echo $LIVE-$((4*4))", "gone-16");
  await clickPoint(page, `[data-id="${point}"]`);
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, "cat /root/cd.txt; echo $LIVE-$((3*5))", "cd-25-15");
  // As a file, which carries the imported CD's blocks: another browser resumes it.
  await page.getByTestId("share-now").click();
  await expect(page.getByTestId("share-dialog")).toHaveAttribute("data-phase", "confirm", { timeout: 120_000 });
  const cdFile = await downloadFile(page);
  await page.getByTestId("share-dialog").getByRole("button", { name: "Close" }).click();
  await openFileElsewhere(browser, repo, cdFile, async (b) => {
    await waitForShell(b);
    await run(b, "cat /root/cd.txt; echo $LIVE-$((2*9))", "cd-25-18");
  });

  // xz, as many images are published: inflated on the way too. The floppy counts its boots in a
  // sector of itself: each boot reads the counter, writes it back plus one, and shows it.
  const floppyXz = test.info().outputPath("floppy.img.xz");
  await writeFile(floppyXz, execFileSync("xz", ["-c"], { input: await readFile(FLOPPY) }));
  await chooseImage(page, floppyXz);
  await expect(page.getByTestId("import-detected")).toContainText("1.44 MB floppy image, xz-compressed");
  await expect(page.getByTestId("import-boot")).toHaveValue("fda");
  await page.getByTestId("import-mouse").uncheck(); // chosen on import: no mouse from the screen
  await importAndOpen(page);
  await expect(terminal(page)).toContainText("sandglass-floppy: booted from the floppy", { timeout: 300_000 });
  await floppyCount(page, 1);
  await expect(terminal(page)).toContainText("floppy-boot-count=1"); // on the serial port too
  const mouse = () => page.evaluate(() => Boolean((window as unknown as { sandglass: { debug: { emulator?: { mouse_adapter?: object } } } }).sandglass.debug.emulator?.mouse_adapter));
  expect(await mouse()).toBe(false);
  const first = await checkpoint(page);
  // A reset (a key on the screen's keyboard) boots again: it reads what the first boot wrote.
  await rebootFloppy(page, "keyboard");
  await floppyCount(page, 2);
  // Back to the checkpoint: the machine waits at 1, and the floppy holds 1 again (not 2), so its
  // next boot counts 2 once more.
  await clickPoint(page, `[data-id="${first}"]`);
  await expect(page.getByTestId("status")).toHaveText("Running");
  await floppyCount(page, 1);
  await rebootFloppy(page);
  await floppyCount(page, 2);
  await checkpoint(page);
  await page.reload();
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "running", { timeout: 120_000 });
  await floppyCount(page, 2);
  await rebootFloppy(page);
  await floppyCount(page, 3);
  // As a file: another browser resumes the machine at 3 and the floppy's next boot counts 4.
  await page.getByTestId("share-now").click();
  await expect(page.getByTestId("share-dialog")).toHaveAttribute("data-phase", "confirm", { timeout: 120_000 });
  const floppyFile = await downloadFile(page);
  await openFileElsewhere(browser, repo, floppyFile, async (b) => {
    await floppyCount(b, 3);
    await rebootFloppy(b);
    await floppyCount(b, 4);
  });
});

test("an install-like flow: a CD with an empty second disk; the guest formats and writes it; a rewind to before makes it empty again; settings change later", async ({ page, repo }) => {
  test.setTimeout(10 * 60_000);
  await page.goto(smallImage(repo));
  await waitForShell(page);
  await chooseImage(page, LIVE_CD);
  await expect(page.getByTestId("import-boot")).toHaveValue("cdrom");
  await page.getByTestId("import-second-disk").selectOption("64");
  await importAndOpen(page);
  await expect(terminal(page)).toContainText("sandglass-live-cd: booted from the CD", { timeout: 300_000 });
  await waitForShell(page);
  // The empty disk is the guest's first hard disk (the CD is still what booted).
  await run(page, "echo sectors-$(cat /sys/block/sda/size)", "sectors-131072");
  const nonZero = (n: number) => `echo 3 > /proc/sys/vm/drop_caches; echo used${n}-$(dd if=/dev/sda bs=65536 count=1024 2>/dev/null | tr -d '\\000' | wc -c)`;
  await run(page, nonZero(1), "used1-0");
  const before = await checkpoint(page);
  await run(page, "mke2fs -q /dev/sda; printf installed-%s 42 | dd of=/dev/sda bs=512 seek=100000 conv=fsync 2>/dev/null; sync; echo formatted-$((3+4))", "formatted-7");
  await run(page, nonZero(2), /used2-[1-9]/);
  await checkpoint(page);
  await waitForSaved(page);
  // Written to the disk, not only the guest's memory: still there after a reload.
  await page.reload();
  await waitForShell(page);
  await run(page, "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/sda bs=512 skip=100000 count=1 2>/dev/null | head -c 12; echo", "installed-42");
  await clickPoint(page, `[data-id="${before}"]`);
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, nonZero(3), "used3-0");

  // Settings change later: the machine is turned off and cold-boots at its disk as it is, in the
  // new shape; the checkpoint taken before resumes in the shape it was taken in.
  const memory = (n: number) => `echo mem${n}-$(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo)`;
  await run(page, memory(1), /mem1-1[0-2]\d/);
  await page.getByTestId("open-settings").click();
  await expect(page.getByTestId("settings-boot").locator("option")).toHaveText(["CD-ROM", "Hard disk"]);
  await page.getByTestId("settings-memory").selectOption("64");
  await expect(page.getByTestId("settings-restart")).toBeVisible();
  await page.getByTestId("settings-apply").click();
  await expect(terminal(page)).toContainText("sandglass-live-cd: booted from the CD", { timeout: 300_000 });
  await waitForShell(page);
  await run(page, memory(2), /mem2-[3-6]\d\b/);
  // Keyboard and mouse are the page's: no restart, the machine resumes where it was.
  await run(page, "export KEPT=k-$((4*4)); echo kept-$((2*2))", "kept-4");
  await page.getByTestId("open-settings").click();
  await page.getByTestId("settings-keyboard").uncheck();
  await expect(page.getByTestId("settings-restart")).toHaveCount(0);
  const reloaded = page.waitForEvent("load", { timeout: 120_000 });
  await page.getByTestId("settings-apply").click();
  await reloaded;
  await waitForShell(page);
  await run(page, "echo $KEPT-$((3+3))", "k-16-6");
  const adapter = () => page.evaluate(() => Boolean((window as unknown as { sandglass: { debug: { emulator?: { keyboard_adapter?: object } } } }).sandglass.debug.emulator?.keyboard_adapter));
  expect(await adapter()).toBe(false);
  await clickPoint(page, `[data-id="${before}"]`);
  await waitForShell(page);
  await run(page, memory(3), /mem3-1[0-2]\d/);
});

test("files that are not disk images, and an import cancelled halfway, leave nothing in storage", async ({ page, repo }) => {
  test.setTimeout(10 * 60_000);
  await page.goto(smallImage(repo));
  await waitForShell(page);
  // The boot's own writes may still be going into storage: count once they are in.
  await waitForSaved(page);
  const own = await imageChunkHashes("small"); // the machine's own image, cached as its guest reads
  const before = await storageCounts(page, own);
  const iso = await readFile(LIVE_CD);
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(4096, 7)]);
  for (const [file, reason] of [
    [{ name: "cat.png", mimeType: "image/png", buffer: png }, "it is a PNG picture"],
    [{ name: "empty.img", mimeType: "application/octet-stream", buffer: Buffer.alloc(0) }, "the file is empty"],
    [{ name: "cut.iso", mimeType: "application/octet-stream", buffer: iso.subarray(0, 2 ** 20) }, "cut short"],
  ] as const) {
    await chooseImage(page, file);
    await expect(page.getByTestId("image-error")).toContainText(reason);
    await expect(page.getByTestId("import-dialog")).toHaveCount(0);
  }
  expect(await storageCounts(page, own)).toEqual(before);

  // A 512 MiB disk with no two chunks alike: long enough an import to cancel.
  const big = test.info().outputPath("big.img");
  const handle = await open(big, "w");
  const slice = Buffer.alloc(16 * 2 ** 20);
  for (let at = 0; at < 512 * 2 ** 20; at += slice.length) {
    for (let c = 0; c < slice.length; c += 65536) slice.writeUInt32LE(at + c + 1, c + 1024);
    if (at === 0) slice.set([0x55, 0xaa], 510);
    await handle.write(slice, 0, slice.length, at);
  }
  await handle.close();
  await chooseImage(page, big);
  await page.getByTestId("import-start").click();
  const progress = page.getByTestId("import-progress");
  await expect.poll(async () => Number(await progress.getAttribute("value")), { timeout: 60_000 }).toBeGreaterThan(0);
  await expect(page.getByTestId("import-dialog")).toContainText(/left/);
  await page.getByTestId("import-cancel").click();
  await expect(page.getByTestId("image-error")).toContainText("cancelled");
  await expect(page.getByTestId("import-dialog")).toHaveCount(0);
  expect(await storageCounts(page, own)).toEqual(before);
  await rm(big);
  await run(page, "echo still-$((7*6))", "still-42"); // the machine that was open runs on
});

test("the command-line importer detects the image kind the same way", async () => {
  const dir = test.info().outputPath("repo");
  const out = execFileSync("npx", ["tsx", "scripts/import-image.ts", LIVE_CD, "--name", "live", "--repo", dir], { encoding: "utf8" });
  expect(out).toContain('image "live"');
  const manifest = JSON.parse(await readFile(join(dir, "images/live.json"), "utf8")) as { hardware?: { bootDevice?: string } };
  expect(manifest.hardware?.bootDevice).toBe("cdrom");
  let refused = "";
  try {
    execFileSync("npx", ["tsx", "scripts/import-image.ts", join(dir, "images/live.json"), "--name", "bad", "--repo", dir], { encoding: "utf8", stdio: "pipe" });
  } catch (err) {
    refused = String((err as { stderr?: string }).stderr);
  }
  expect(refused).toContain("cannot be used as a disk image");
});
