/**
 * The disk worker's "files at a point" (DiskService → point-files.ts) on a real DiskService over
 * fake-indexeddb, whose machine's base image is a host ext4 image and whose guest writes are what
 * debugfs changed: diffs between checkpoints and bookmarks, the "taken mid-write" flag from the
 * log's times, listing, reading and text diffs, a thinned point refused, opened points dropped
 * after thinning rewrote where their blocks are, a file with history (bundle v2) and opening its
 * newest point, and a disk without ext4 answered with "can't read files on this disk".
 */
import "fake-indexeddb/auto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { bundleDisk, changedChunkRanges, decodeBundlePoints } from "../../src/engine/bundle.ts";
import { DiskService } from "../../src/engine/disk-service.ts";
import { diffOpened, differingBlocks, openFiles } from "../../src/engine/ext4/files.ts";
import type { FilesPoint } from "../../src/engine/point-files.ts";
import { BLOCK_SIZE } from "../../src/engine/store-format.ts";
import { debugfs, mke2fs, pattern, scratch } from "./ext4-tools.ts";
import { repositoryOf } from "./repository.ts";
import { page, v86State } from "./v86-state.ts";

const work = scratch();
afterAll(() => work.cleanup());
const REPO = "http://repo.test/repo/";
let services = 0;

/** A DiskService whose repository serves `image` as image "disk" (64 KiB chunks). */
function serviceOf(image: Uint8Array): DiskService {
  return new DiskService({ fetch: repositoryOf(image, 64 * 1024, "disk", "test disk").fetchFn, dbName: `point-files-${++services}` });
}

/** Writes the 4 KiB blocks where `next` differs from `current`, as the guest would. */
async function writeDifferences(service: DiskService, current: Uint8Array, next: Uint8Array): Promise<void> {
  for (let at = 0; at < next.byteLength; at += BLOCK_SIZE) {
    const block = next.slice(at, at + BLOCK_SIZE);
    if (!Buffer.from(block).equals(Buffer.from(current.subarray(at, at + BLOCK_SIZE)))) await service.write(at, block);
  }
}

let stateSeed = 0;
async function checkpoint(service: DiskService, auto = false, name?: string): Promise<FilesPoint> {
  const point = await service.pointNow();
  const saved = await service.saveCheckpoint(point, v86State([page(++stateSeed), page(++stateSeed)]), { auto, ...(name ? { name } : {}) });
  return { branch: saved.branch, seq: saved.seq, id: saved.id };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const show = (d: { changes: { change: string; path: string; what: string[] }[] }) => d.changes.map((c) => `${c.change} ${c.path} ${c.what.join(",")}`.trim());

describe("files at a point, through DiskService", () => {
  it("diffs, lists, reads and text-diffs checkpoints and bookmarks; flags a point taken mid-write", async () => {
    const base = join(work.dir, "base.img");
    mke2fs(base, 16, ["-t", "ext4", "-b", "4096"]);
    writeFileSync(join(work.dir, "fstab"), "/dev/sda2 / ext4 rw 0 1\n");
    debugfs(base, ["mkdir /etc", "cd /etc", `write ${join(work.dir, "fstab")} fstab`]);
    const image = new Uint8Array(readFileSync(base));
    const service = serviceOf(image);
    await service.open({ repo: REPO, kind: "image", name: "disk" });
    const before = await checkpoint(service, false, "before");

    const next = join(work.dir, "next.img");
    copyFileSync(base, next);
    writeFileSync(join(work.dir, "fstab2"), "/dev/sda2 / ext4 ro 0 1\n");
    debugfs(next, ["mkdir /srv", "symlink /srv/link /etc/fstab", "sif /etc mode 040700", "rm /etc/fstab", "cd /etc", `write ${join(work.dir, "fstab2")} fstab`]);
    const nextBytes = new Uint8Array(readFileSync(next));
    await writeDifferences(service, image, nextBytes);
    // A bookmark right after the writes: taken mid-write as far as the flag is concerned.
    const hurried = await service.bookmark("hurried");
    await sleep(1100);
    const after = await checkpoint(service);

    const diff = await service.filesDiff(before, after);
    expect(show(diff)).toEqual(["modified /etc mode", "modified /etc/fstab content", "added /srv", "added /srv/link"]);
    expect(diff.changes.find((c) => c.path === "/etc/fstab")).toMatchObject({ oldSize: 24, newSize: 24, kind: "file" });
    expect(diff.a.mayBeInconsistent).toBe(false);
    expect(diff.b.mayBeInconsistent).toBe(false);
    expect(diff.ms).toBeGreaterThan(0);

    const atBookmark: FilesPoint = { branch: hurried.branch, seq: hurried.seq, id: hurried.id };
    expect(show(await service.filesDiff(atBookmark, after))).toEqual([]);
    const info = await service.filesInfo(atBookmark);
    expect(info.mayBeInconsistent).toBe(true);
    expect(info.reasons.join()).toContain("being written");

    const listing = await service.filesList(after, "/srv");
    expect(listing).toMatchObject({ total: 1, entries: [{ path: "/srv/link", kind: "symlink", target: "/etc/fstab" }] });
    expect(new TextDecoder().decode(await service.filesRead(before, "/etc/fstab"))).toBe("/dev/sda2 / ext4 rw 0 1\n");
    expect(new TextDecoder().decode(await service.filesRead(after, "/etc/fstab", 9, 4))).toBe(" / e");
    expect((await service.filesStat(after, "/etc")).mode & 0o7777).toBe(0o700);
    const text = await service.filesTextDiff(before, after, "/etc/fstab");
    expect(text.patch).toContain("-/dev/sda2 / ext4 rw 0 1");
    expect(text.patch).toContain("+/dev/sda2 / ext4 ro 0 1");
    expect(await service.filesTextDiff(before, after, "/srv")).toEqual({ patch: null, why: "not a file" });
    await expect(service.filesRead(before, "/srv/link")).rejects.toThrow("/srv/link does not exist at this point");
    await expect(service.filesList(after, "/etc/fstab")).rejects.toMatchObject({ name: "FileNotFoundError" });
    // A point that is not in the history (never marked, not a tip) is refused, not read.
    await expect(service.filesList({ branch: 0, seq: after.seq - 1 }, "/")).rejects.toThrow("no longer in this machine's history");
  }, 60_000);

  it("drops opened points when thinning rewrites where their blocks are stored", async () => {
    const base = join(work.dir, "thin-base.img");
    mke2fs(base, 16, ["-t", "ext4", "-b", "4096"]);
    const image = new Uint8Array(readFileSync(base));
    const service = serviceOf(image);
    await service.open({ repo: REPO, kind: "image", name: "disk" });

    // One batch of writes: a small file that stays, and a large one overwritten later (so the
    // batch's data record becomes mostly dead, and thinning compacts it: its blocks move).
    const one = join(work.dir, "thin-one.img");
    copyFileSync(base, one);
    writeFileSync(join(work.dir, "keep"), pattern(6000, 1));
    writeFileSync(join(work.dir, "big"), pattern(600_000, 2));
    debugfs(one, [`write ${join(work.dir, "keep")} keep`, `write ${join(work.dir, "big")} big`]);
    const oneBytes = new Uint8Array(readFileSync(one));
    await writeDifferences(service, image, oneBytes);
    await checkpoint(service, true);
    const two = join(work.dir, "thin-two.img");
    copyFileSync(one, two);
    const blocks = Math.ceil(600_000 / 4096);
    debugfs(two, Array.from({ length: blocks }, (_, i) => `zap_block -f /big -p 0x5a ${i}`));
    await writeDifferences(service, oneBytes, new Uint8Array(readFileSync(two)));
    // Two automatic checkpoints in one hour: the rule below keeps the newer, so the first goes.
    await checkpoint(service, true);
    const kept = await checkpoint(service, false, "kept");

    // The point is opened and where its blocks are is cached (/keep's bytes themselves are not
    // read yet, so they are not in the file system's own block cache either).
    expect((await service.filesRead(kept, "/big", 0, 8)).every((b) => b === 0x5a)).toBe(true);
    const result = await service.thin({ tiers: [{ after: 0, every: 3_600_000 }] });
    expect(result.checkpoints).toBe(1);
    expect(result.compactedRecords).toBeGreaterThan(0);
    expect(Buffer.from(await service.filesRead(kept, "/keep")).equals(pattern(6000, 1))).toBe(true);
  }, 60_000);

  it("exports checkpoints with their history as one file (version 2) that the command line can diff, and opens its newest point", async () => {
    const base = join(work.dir, "history-base.img");
    mke2fs(base, 16, ["-t", "ext4", "-b", "4096"]);
    const image = new Uint8Array(readFileSync(base));
    const service = serviceOf(image);
    await service.open({ repo: REPO, kind: "image", name: "disk" });
    await checkpoint(service, true);
    const first = await checkpoint(service, true); // same disk as the one before: one point of the two
    const step = join(work.dir, "history-step.img");
    copyFileSync(base, step);
    writeFileSync(join(work.dir, "notes"), "a note\n");
    debugfs(step, [`write ${join(work.dir, "notes")} notes`]);
    await writeDifferences(service, image, new Uint8Array(readFileSync(step)));
    const last = await checkpoint(service, false, "with notes");

    const ids = await service.historyOf(last.id!);
    expect(ids).toEqual([first.id, last.id]);
    const estimate = await service.exportPointsEstimate(ids);
    const { bytes } = await service.exportPoints(ids);
    expect(bytes.byteLength).toBeLessThanOrEqual(estimate);
    const { points, contents } = await decodeBundlePoints(bytes);
    expect(points.map((p) => p.label.checkpoint)).toEqual(ids);
    expect(points[1]!.label.name).toBe("with notes");
    const [da, db] = points.map((p) => bundleDisk(p.manifest, contents));
    const [fa, fb] = await Promise.all([openFiles(da!), openFiles(db!)]);
    const changed = await differingBlocks(da!, db!, changedChunkRanges(points[0]!.manifest, points[1]!.manifest));
    expect(show(await diffOpened(fa, fb, changed))).toEqual(["added /notes"]);

    const opened = await serviceOf(image).openBundle(bytes, REPO);
    expect(opened).toMatchObject({ id: points[1]!.manifest.name, points: 2, label: { name: "with notes" } });
  }, 60_000);

  it("says it can't read files on a disk without ext4, and the machine goes on", async () => {
    const disk = new Uint8Array(4 * 1024 * 1024).map((_, i) => (i * 31) & 0xff);
    const service = serviceOf(disk);
    await service.open({ repo: REPO, kind: "image", name: "disk" });
    const a = await checkpoint(service);
    await service.write(0, new Uint8Array(4096).fill(7));
    const b = await checkpoint(service);
    await expect(service.filesDiff(a, b)).rejects.toMatchObject({ name: "UnreadableDiskError", message: expect.stringContaining("can't read files on this disk") });
    await expect(service.filesList(b, "/")).rejects.toThrow("can't read files on this disk");
    await service.write(4096, new Uint8Array(4096).fill(8));
    expect((await service.read(4096, 4096))[0]).toBe(8);
  }, 60_000);
});
