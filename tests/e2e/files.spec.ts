/**
 * Issue 14 end to end: which files changed between two points, browsing and downloading them as
 * they were, and taking one file back into the running guest, on the real guests.
 *
 * - Debian (booted snapshot, guest agent on COM2): package-manager-like changes (dpkg installs a
 *   package built in the guest) and edits (create, modify, delete, chmod, a symlink, a new folder)
 *   between two checkpoints; picking the two on the timeline lists exactly the files
 *   `find / -xdev -cnewer <stamp>` finds in the guest, plus the deletion; the text diff; a file
 *   and a folder (zip) downloaded as they were; the file browser; one file restored from the
 *   earlier point into the running guest (md5sum matches the earlier content, everything else
 *   keeps its later content: the diff from the later point to the restore lists that file alone);
 *   the restore undone from the timeline; the same restore from the file browser, undone with the
 *   page's Undo.
 * - The small busybox image (ext4, no agent): the diff works, a restore says it needs the agent,
 *   download still works, a point taken while the guest writes is flagged; "Download as file"
 *   with history, and `npm run sandglass -- diff <file> 0 1` lists the changed file.
 * - A floppy (FAT, not ext4) brought as an image: "can't read files on this disk", and the machine
 *   goes on.
 *
 * One page across the checks, in order, as a person would.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { unzipSync } from "fflate";
import type { BrowserContext, Page } from "@playwright/test";
import { checkpoint, clickPoint, expect, floppyCount, rebootFloppy, run, serve, smallImage, terminal, test, value, waitForShell, type RepoServer } from "./fixtures.ts";

test.describe.configure({ mode: "serial" });

const FLOPPY = resolve("build/test-images/floppy.img");

let repo: RepoServer;
let context: BrowserContext;
let page: Page;

const md5 = (text: string) => createHash("md5").update(text).digest("hex");

test.beforeAll(async ({ browser }) => {
  repo = await serve();
  context = await browser.newContext({ acceptDownloads: true });
  page = await context.newPage();
});

test.afterAll(async () => {
  await context?.close();
  await repo?.close();
});

/** A file in the guest's shared folder, as the page reads it. */
async function sharedText(p: Page, path: string): Promise<string> {
  return p.evaluate(async (path) => {
    const s = (window as unknown as { sandglass: { sharedFile(path: string): Promise<Blob> } }).sandglass;
    return (await s.sharedFile(path)).text();
  }, path);
}

/** An md5sum, as `value` reads it. */
const MD5 = "[0-9a-f]{32}";

/** The guest's clock within a few seconds of the host's (its NTP loop after the resume). */
async function clockInSync(p: Page): Promise<void> {
  await expect
    .poll(async () => Math.abs(Number(await value(p, "date +%s", "clock", "[0-9]+")) - Date.now() / 1000), { timeout: 90_000, intervals: [5_000] })
    .toBeLessThan(10);
}

/** The id of the checkpoint whose name starts with `prefix` (the newest such). */
async function checkpointNamed(p: Page, prefix: string): Promise<string> {
  return p.evaluate((prefix) => {
    const s = (window as unknown as { sandglass: { timeline: { checkpoints: { id: string; time: number; name?: string }[] } | null } }).sandglass;
    return [...(s.timeline?.checkpoints ?? [])].filter((c) => c.name?.startsWith(prefix)).sort((a, b) => b.time - a.time)[0]?.id ?? "";
  }, prefix);
}

/**
 * Whether a path is the same at two checkpoints as far as the diff is concerned (kind, mode,
 * owner, size, symlink target and bytes), read through the disk worker: find's -cnewer also lists
 * files whose inode was touched without a change (dpkg's lock files).
 */
async function unchanged(p: Page, a: string, b: string, path: string): Promise<boolean> {
  return p.evaluate(
    async ({ a, b, path }) => {
      type Stat = { kind: string; mode: number; uid: number; gid: number; size: number; target?: string };
      type Api = {
        filesStat(p: object, path: string): Promise<Stat>;
        filesRead(p: object, path: string, offset: number, length: number): Promise<Uint8Array>;
      };
      const s = (window as unknown as { sandglass: { debug: { api: Api }; timeline: { checkpoints: { id: string; branch: number; seq: number }[] } } }).sandglass;
      const point = (id: string) => {
        const c = s.timeline.checkpoints.find((x) => x.id === id)!;
        return { branch: c.branch, seq: c.seq, id };
      };
      const [sa, sb] = [await s.debug.api.filesStat(point(a), path), await s.debug.api.filesStat(point(b), path)];
      if (JSON.stringify([sa.kind, sa.mode, sa.uid, sa.gid, sa.size, sa.target]) !== JSON.stringify([sb.kind, sb.mode, sb.uid, sb.gid, sb.size, sb.target])) return false;
      if (sa.kind !== "file") return true;
      const [ba, bb] = [await s.debug.api.filesRead(point(a), path, 0, sa.size), await s.debug.api.filesRead(point(b), path, 0, sb.size)];
      return ba.length === bb.length && ba.every((x, i) => x === bb[i]);
    },
    { a, b, path },
  );
}

/** Picks two points on the timeline (compare mode) and waits for the changed files. */
async function compare(p: Page, a: string, b: string): Promise<void> {
  if ((await p.getByTestId("compare-toggle").getAttribute("aria-pressed")) !== "true") await p.getByTestId("compare-toggle").click();
  await clickPoint(p, `[data-id="${a}"]`);
  await clickPoint(p, `[data-id="${b}"]`);
  await expect(p.getByTestId("changes")).toHaveAttribute("data-phase", /done|failed/, { timeout: 120_000 });
}

/** The changed-files panel's rows. */
async function changes(p: Page): Promise<{ path: string; change: string; kind: string; what: string }[]> {
  return p.getByTestId("change").evaluateAll((rows) =>
    rows.map((r) => ({ path: r.getAttribute("data-path")!, change: r.getAttribute("data-change")!, kind: r.getAttribute("data-kind")!, what: r.getAttribute("data-what")! })),
  );
}

/** Opens a changed path's row in the panel. */
async function openRow(p: Page, path: string): Promise<void> {
  const row = p.locator(`[data-testid="change"][data-path="${path}"]`);
  if ((await row.locator("button.row").getAttribute("aria-expanded")) !== "true") await row.locator("button.row").click();
}

/** Clicks a download button and returns what was saved. */
async function downloaded(p: Page, click: () => Promise<void>, timeout = 120_000): Promise<{ name: string; bytes: Buffer }> {
  const downloading = p.waitForEvent("download", { timeout });
  await click();
  const download = await downloading;
  const file = test.info().outputPath(download.suggestedFilename());
  await download.saveAs(file);
  return { name: download.suggestedFilename(), bytes: await readFile(file) };
}

test("Debian: the changed files are exactly what the guest changed; one file restored into the running guest, and undone from the timeline", async () => {
  test.setTimeout(10 * 60_000);
  await page.goto(repo.url);
  await waitForShell(page);
  await clockInSync(page);
  const confA = "line1\nline2\n";
  const confB = "line1\nline2 changed\nline3\n";
  await run(
    page,
    "mkdir -p /srv/proj && printf 'alpha\\n' > /srv/proj/keep.txt && printf 'line1\\nline2\\n' > /etc/sandglass-demo.conf && " +
      "printf 'bye\\n' > /root/old.txt && printf 'x' > /root/mode.sh && chmod 644 /root/mode.sh && sync && sleep 1.2 && touch /tmp/stamp && sleep 1.2; echo setup-$((6*7))",
    "setup-42",
  );
  const a = await checkpoint(page);

  // A package installed by dpkg (built in the guest: the guest has no package mirror), and edits.
  await run(
    page,
    "mkdir -p /tmp/pkg/DEBIAN /tmp/pkg/usr/bin /tmp/pkg/usr/share/sgdemo && " +
      "printf 'Package: sgdemo\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: Sandglass <t@example.org>\\nDescription: files test\\n' > /tmp/pkg/DEBIAN/control && " +
      "printf '#!/bin/sh\\necho demo\\n' > /tmp/pkg/usr/bin/sgdemo && chmod 755 /tmp/pkg/usr/bin/sgdemo && echo data > /tmp/pkg/usr/share/sgdemo/data.txt && " +
      "dpkg-deb -b /tmp/pkg /tmp/sgdemo.deb >/dev/null && dpkg -i /tmp/sgdemo.deb >/dev/null; echo dpkg-$((5*5))",
    "dpkg-25",
  );
  await run(
    page,
    "printf 'line1\\nline2 changed\\nline3\\n' > /etc/sandglass-demo.conf && printf 'new file\\n' > /root/new.txt && rm /root/old.txt && " +
      "chmod 755 /root/mode.sh && ln -s /etc/sandglass-demo.conf /root/demo-link && mkdir -p /srv/newdir/sub && printf 'inside\\n' > /srv/newdir/sub/f.txt && " +
      "sync; echo edits-$((7*7))",
    "edits-49",
  );
  // find reads every inode and directory of the 2 GiB root file system: ~20 s once the page has
  // fetched the file system's metadata in the background, ~60 s before (over the 90 s a command
  // usually gets on a slow CI machine), and this test does not wait for that.
  const finding = Date.now();
  await run(page, "find / -xdev -cnewer /tmp/stamp -printf '%y %p\\n' > /shared/changed.txt && sleep 1.2; echo found-$((8*8))", "found-64", 300_000);
  console.log(`find / -xdev in the guest: ${Date.now() - finding} ms`);
  const b = await checkpoint(page);
  const found = (await sharedText(page, "/changed.txt")).trim().split("\n").map((l) => ({ type: l[0]!, path: l.slice(2) }));
  console.log(`find -cnewer: ${found.length} paths`);

  await compare(page, a, b);
  await expect(page.getByTestId("changes")).toHaveAttribute("data-phase", "done");
  console.log(`in-page diff (Debian, ${await page.getByTestId("change").count()} changes): ${await page.getByTestId("diff-ms").innerText()} ms`);
  const listed = await changes(page);
  const nonDirs = (list: { path: string }[]) => list.map((c) => c.path).sort();
  // Exactly the files find finds (and the one deleted), nothing else; folders: those it made.
  // A file find lists whose bytes, mode and owner are the same at both points was only touched.
  const touched: string[] = [];
  for (const f of found.filter((f) => f.type !== "d" && !listed.some((c) => c.path === f.path))) {
    if (await unchanged(page, a, b, f.path)) touched.push(f.path);
  }
  console.log(`find lists ${touched.length} files touched without a change: ${touched.join(" ")}`);
  expect(touched.every((path) => path.startsWith("/var/lib/dpkg/"))).toBe(true);
  expect(nonDirs(listed.filter((c) => c.change !== "removed" && c.kind !== "dir"))).toEqual(
    nonDirs(found.filter((f) => f.type !== "d" && !touched.includes(f.path))),
  );
  expect(listed.filter((c) => c.change === "removed").map((c) => c.path)).toEqual(["/root/old.txt"]);
  const dirs = listed.filter((c) => c.kind === "dir");
  for (const d of dirs) expect(found.some((f) => f.type === "d" && f.path === d.path), `${d.path} is a folder find found`).toBe(true);
  expect(dirs.filter((d) => d.change === "added").map((d) => d.path)).toEqual(expect.arrayContaining(["/srv/newdir", "/srv/newdir/sub", "/usr/share/sgdemo"]));
  const at = (path: string) => listed.find((c) => c.path === path);
  expect(at("/etc/sandglass-demo.conf")).toMatchObject({ change: "modified", kind: "file" });
  expect(at("/etc/sandglass-demo.conf")!.what).toContain("content");
  expect(at("/root/mode.sh")).toMatchObject({ change: "modified", what: "mode" });
  expect(at("/root/demo-link")).toMatchObject({ change: "added", kind: "symlink" });
  expect(at("/usr/bin/sgdemo")).toMatchObject({ change: "added", kind: "file" });
  expect(at("/var/lib/dpkg/status")).toMatchObject({ change: "modified", kind: "file" });

  // The text diff, and the file as it was at A.
  await openRow(page, "/etc/sandglass-demo.conf");
  await expect(page.getByTestId("text-diff")).toContainText("+line2 changed");
  await expect(page.getByTestId("text-diff")).toContainText("-line2");
  const asAtA = await downloaded(page, () => page.getByTestId("download-a").click());
  expect(asAtA.bytes.toString()).toBe(confA);

  // The files at B: a folder, a symlink's target, a mode; a folder as a zip.
  await page.getByTestId("browse-b").click();
  const browser = page.getByTestId("file-browser");
  await expect(browser).toHaveAttribute("data-phase", "done");
  await browser.getByRole("button", { name: "root/" }).click();
  await expect(browser).toHaveAttribute("data-path", "/root");
  await expect(browser.locator('[data-testid="entry"][data-name="demo-link"]')).toContainText("→ /etc/sandglass-demo.conf");
  await expect(browser.locator('[data-testid="entry"][data-name="mode.sh"]')).toContainText("-rwxr-xr-x");
  await expect(browser.locator('[data-testid="entry"][data-name="old.txt"]')).toHaveCount(0);
  await browser.getByRole("button", { name: "/", exact: true }).click();
  await expect(browser).toHaveAttribute("data-path", "/");
  await browser.getByRole("button", { name: "srv/" }).click();
  await expect(browser).toHaveAttribute("data-path", "/srv");
  const zip = await downloaded(page, () => browser.locator('[data-testid="entry"][data-name="newdir"] [data-testid="zip-entry"]').click());
  const unzipped = unzipSync(new Uint8Array(zip.bytes));
  expect(new TextDecoder().decode(unzipped["newdir/sub/f.txt"])).toBe("inside\n");
  await page.getByTestId("close-browser").click();

  // Restore A's version into the running guest: a checkpoint first, the agent's writes after.
  await run(page, "md5sum /etc/sandglass-demo.conf", md5(confB));
  await openRow(page, "/etc/sandglass-demo.conf");
  await page.getByTestId("restore-a").click();
  await expect(page.getByTestId("restore-status")).toHaveAttribute("data-phase", "done", { timeout: 120_000 });
  await expect(page.getByTestId("undo-restore")).toBeVisible();
  expect(await value(page, "md5sum /etc/sandglass-demo.conf | cut -c1-32", "restored", MD5)).toBe(md5(confA));
  await run(page, "stat -c 'mode-%a-%U' /etc/sandglass-demo.conf", "mode-644-root");
  // Everything else keeps its later content.
  await run(page, "cat /root/new.txt; readlink /root/demo-link; stat -c 'sh-%a' /root/mode.sh; test -e /root/old.txt || echo old-gone-$((2*3))", "old-gone-6");
  await expect(terminal(page)).toContainText("sh-755");
  const restored = await checkpointNamed(page, "Restored /etc/sandglass-demo.conf");
  const before = await checkpointNamed(page, "Before restoring /etc/sandglass-demo.conf");
  expect(restored).not.toBe("");
  expect(before).not.toBe("");
  await page.getByTestId("close-changes").click();
  await compare(page, b, restored);
  expect((await changes(page)).map((c) => `${c.change} ${c.path} ${c.what}`)).toEqual(["modified /etc/sandglass-demo.conf size,content"]);
  await page.getByTestId("close-changes").click();

  // Undo from the timeline: back to the checkpoint before the restore, the file as at B again.
  await clickPoint(page, `[data-id="${before}"]`);
  await expect(page.getByTestId("status")).toHaveText("Running", { timeout: 120_000 });
  expect(await value(page, "md5sum /etc/sandglass-demo.conf | cut -c1-32", "undone", MD5)).toBe(md5(confB));

  // The same from the file browser at A, taken back with the Undo the page offers.
  await page.getByTestId("compare-toggle").click();
  await clickPoint(page, `[data-id="${a}"]`);
  await page.getByTestId("browse-picked").click();
  await expect(browser).toHaveAttribute("data-phase", "done");
  await browser.getByRole("button", { name: "etc/" }).click();
  await expect(browser).toHaveAttribute("data-path", "/etc");
  await browser.locator('[data-testid="entry"][data-name="sandglass-demo.conf"] [data-testid="restore-entry"]').click();
  await expect(page.getByTestId("restore-status")).toHaveAttribute("data-phase", "done", { timeout: 120_000 });
  expect(await value(page, "md5sum /etc/sandglass-demo.conf | cut -c1-32", "again", MD5)).toBe(md5(confA));
  await page.getByTestId("undo-restore").click();
  await expect(page.getByTestId("notice")).toContainText("Undid the restore of /etc/sandglass-demo.conf");
  await expect(page.getByTestId("status")).toHaveText("Running", { timeout: 120_000 });
  expect(await value(page, "md5sum /etc/sandglass-demo.conf | cut -c1-32", "undone2", MD5)).toBe(md5(confB));
  await page.getByTestId("close-browser").click();
  await page.getByTestId("compare-toggle").click();
});

test("the small image (no agent): the diff works, restore says it needs the agent, download works, a point taken mid-write is flagged; a file with history diffs on the command line and opens at its newest point", async () => {
  test.setTimeout(12 * 60_000);
  await page.goto(smallImage(repo));
  await waitForShell(page);
  const first = await checkpoint(page);
  await run(page, "echo small-file > /root/small.txt; sync; sleep 1.2; echo wrote-$((3*3))", "wrote-9");
  const second = await checkpoint(page);
  await compare(page, first, second);
  expect((await changes(page)).map((c) => `${c.change} ${c.path}`)).toEqual(["added /root/small.txt"]);
  await openRow(page, "/root/small.txt");
  const file = await downloaded(page, () => page.getByTestId("download-b").click());
  expect(file.bytes.toString()).toBe("small-file\n");
  await page.getByTestId("restore-b").click();
  await expect(page.getByTestId("restore-status")).toHaveAttribute("data-phase", "failed");
  await expect(page.getByTestId("restore-status")).toContainText("needs the Sandglass guest agent");
  await page.getByTestId("close-changes").click();

  // A point taken while the guest writes is flagged as such.
  await run(page, "(while :; do date > /root/busy; sync; sleep 0.2; done) & echo loop-$((4*4))", "loop-16");
  page.once("dialog", (d) => void d.accept("while writing"));
  await page.getByRole("button", { name: "Bookmark" }).click();
  await expect.poll(() => page.evaluate(() => (window as unknown as { sandglass: { timeline: { markers: { name?: string }[] } } }).sandglass.timeline.markers.some((m) => m.name === "while writing"))).toBe(true);
  const bookmark = await page.evaluate(() => (window as unknown as { sandglass: { timeline: { markers: { id: string; name?: string }[] } } }).sandglass.timeline.markers.find((m) => m.name === "while writing")!.id);
  await run(page, "kill $!; echo stopped-$((5*3))", "stopped-15");
  await compare(page, second, bookmark);
  await expect(page.getByTestId("inconsistent-b")).toContainText("may be inconsistent");
  await expect(page.getByTestId("inconsistent-a")).toHaveCount(0);
  await page.getByTestId("close-changes").click();

  // "Download as file" with history: the command line diffs its first two points.
  await page.locator(`[data-testid="share-point"][data-id="${second}"]`).click();
  await expect(page.getByTestId("share-dialog")).toBeVisible();
  await page.getByTestId("export-history").check();
  await expect(page.getByTestId("export-history-points")).toContainText("2 points");
  await expect(page.getByTestId("export-file")).toContainText(/at most \d+(\.\d)? MiB/);
  const exportStarted = Date.now();
  // Each point's machine state is cut, hashed and compressed: minutes on a busy machine.
  const bundle = await downloaded(page, () => page.getByTestId("export-file").click(), 400_000);
  console.log(`"Download as file" with history: ${bundle.bytes.byteLength} bytes in ${Date.now() - exportStarted} ms`);
  const path = test.info().outputPath(bundle.name);
  const cli = execFileSync("npm", ["run", "--silent", "sandglass", "--", "diff", path, "0", "1"], { encoding: "utf8" });
  console.log(`npm run sandglass -- diff <file> 0 1:\n${cli}`);
  expect(cli).toContain("A  /root/small.txt");
  await page.getByTestId("share-dialog").getByRole("button", { name: "Close" }).click();

  // Opened in the page, the file resumes its newest point (the one shared), and says so: the
  // file written before it is there, the writing loop started after it is not.
  await page.getByTestId("file-input").setInputFiles(path);
  await page.waitForURL(/#\/s\/[a-z2-7]{26}$/);
  await expect(page.getByTestId("notice")).toContainText("at its newest point");
  await expect(page.getByTestId("notice")).toContainText("the last of its 2 points");
  await waitForShell(page);
  await run(page, "cat /root/small.txt; test -e /root/busy || echo no-busy-$((6*6))", "no-busy-36");
});

test("a floppy (FAT, not ext4): can't read files on this disk, and the machine goes on", async () => {
  test.setTimeout(6 * 60_000);
  await page.getByTestId("file-input").setInputFiles(FLOPPY);
  await expect(page.getByTestId("import-boot")).toHaveValue("fda");
  await page.getByTestId("import-start").click();
  await page.waitForURL(/#\/m\/[0-9a-f-]{36}$/, { timeout: 300_000 });
  await floppyCount(page, 1);
  const one = await checkpoint(page);
  await rebootFloppy(page);
  await floppyCount(page, 2);
  const two = await checkpoint(page);
  await compare(page, one, two);
  await expect(page.getByTestId("changes-error")).toContainText("can't read files on this disk");
  await page.getByTestId("browse-b").click();
  await expect(page.getByTestId("browse-error")).toContainText("can't read files on this disk");
  await page.getByTestId("close-browser").click();
  await page.getByTestId("close-changes").click();
  await rebootFloppy(page);
  await floppyCount(page, 3);
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "running");
});
