/**
 * `npm run sandglass -- points|ls|cat|diff` on a two-point `.sandglass` file (bundle version 2)
 * made from host disk images shaped like Sandglass's guests (MBR, FAT16 boot partition, ext4
 * root), run as a person would run it (tsx, a child process).
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodePoints, type BundlePoint } from "../../src/engine/bundle.ts";
import { newSnapshotId, type ChunkRef, type DiskManifest } from "../../src/engine/repo-format.ts";
import { storeForm } from "../../src/engine/snapshot.ts";
import { debugfs, mke2fs, partitionedDisk, pattern, scratch } from "./ext4-tools.ts";

const work = scratch();
afterAll(() => work.cleanup());
const CHUNK = 64 * 1024;

/** A snapshot manifest of a whole disk image, its chunks added to `files`. */
async function pointOf(disk: string, name: string, time: number, files: Map<ChunkRef, Uint8Array>): Promise<BundlePoint> {
  const bytes = new Uint8Array(readFileSync(disk));
  const chunks: (ChunkRef | null)[] = [];
  for (let at = 0; at < bytes.byteLength; at += CHUNK) {
    const data = bytes.subarray(at, at + CHUNK);
    if (data.every((b) => b === 0)) {
      chunks.push(null);
      continue;
    }
    const { ref, stored } = await storeForm(data);
    files.set(ref, stored);
    chunks.push(ref);
  }
  const state = await storeForm(new TextEncoder().encode(`state of ${name}`));
  files.set(state.ref, state.stored);
  const manifest: DiskManifest = {
    format: "sandglass-disk",
    version: 1,
    kind: "snapshot",
    name: newSnapshotId(),
    description: name,
    created: new Date(time).toISOString(),
    size: bytes.byteLength,
    chunkSize: CHUNK,
    chunks,
    storedBytes: 0,
    parent: { kind: "image", name: "default" },
    machine: { pieces: [state.ref], stateBytes: 14, memoryBytes: 64 << 20 },
  };
  return { label: { name, time, branch: 0, seq: time / 1000 }, manifest };
}

function cli(...args: string[]) {
  const run = spawnSync(join("node_modules", ".bin", "tsx"), ["scripts/sandglass.ts", ...args], { encoding: "utf8", cwd: process.cwd() });
  return { status: run.status, out: run.stdout, err: run.stderr };
}

let bundle: string;
let ids: string[];

beforeAll(async () => {
  const root = join(work.dir, "root.img");
  mke2fs(root, 12, ["-t", "ext4", "-b", "4096"]);
  const w = (name: string, data: string | Buffer) => {
    const host = join(work.dir, name);
    writeFileSync(host, data);
    return host;
  };
  debugfs(root, [
    "mkdir /etc",
    "mkdir /home",
    "mkdir /home/user",
    "mkdir /bin",
    "cd /etc",
    `write ${w("fstab", "/dev/sda2 / ext4 rw,noatime 0 1\n")} fstab`,
    "cd /home/user",
    `write ${w("notes", "one\ntwo\nthree\n")} notes.txt`,
    "cd /bin",
    `write ${w("tool", pattern(100_000, 7))} tool`,
    'symlink /bin/sh "busybox"',
  ]);
  const before = join(work.dir, "before.disk");
  partitionedDisk(before, root);
  const changed = join(work.dir, "changed.img");
  copyFileSync(root, changed);
  debugfs(changed, [
    "rm /home/user/notes.txt",
    "cd /home/user",
    `write ${w("notes2", "one\n2\nthree\nfour\n")} notes.txt`,
    `write ${w("new", "hello\n")} new.txt`,
    "rm /bin/tool",
    "sif /etc/fstab mode 0100600",
  ]);
  const after = join(work.dir, "after.disk");
  partitionedDisk(after, changed);
  const files = new Map<ChunkRef, Uint8Array>();
  const points = [await pointOf(before, "before", 1_700_000_000_000, files), await pointOf(after, "after", 1_700_000_060_000, files)];
  ids = points.map((p) => p.manifest.name);
  bundle = join(work.dir, "two.sandglass");
  writeFileSync(bundle, encodePoints(points, files));
}, 60_000);

describe("npm run sandglass", () => {
  it("lists the points, a directory and a file at a point", () => {
    const points = cli("points", bundle);
    expect(points.status).toBe(0);
    expect(points.out.split("\n").filter(Boolean)).toEqual([
      `0  2023-11-14 22:13:20 UTC  before  branch 0 write 1700000000  ${ids[0]}`,
      `1  2023-11-14 22:14:20 UTC  after  branch 0 write 1700000060  ${ids[1]}`,
    ]);
    const ls = cli("ls", bundle, "before", "/bin");
    expect(ls.status).toBe(0);
    expect(ls.out).toMatch(/^lrwxrwxrwx +0 +0 +7 .* sh -> busybox$/m);
    expect(ls.out).toMatch(/^-rw-r--r-- +0 +0 +100000 .* tool$/m);
    const cat = spawnSync(join("node_modules", ".bin", "tsx"), ["scripts/sandglass.ts", "cat", bundle, "0", "/bin/tool"]);
    expect(cat.status).toBe(0);
    expect(cat.stdout.equals(pattern(100_000, 7))).toBe(true);
    expect(cli("cat", bundle, ids[1]!.slice(0, 8), "/home/user/notes.txt").out).toBe("one\n2\nthree\nfour\n");
  }, 60_000);

  it("diffs two points file by file, with text diffs", () => {
    const diff = cli("diff", bundle, "0", "after", "--patch");
    expect(diff.err).toBe("");
    expect(diff.status).toBe(0);
    const lines = diff.out.split("\n");
    expect(lines.filter((l) => /^[ADM] /.test(l))).toEqual([
      "D  /bin/tool  file 100000 bytes",
      "M  /etc/fstab  mode",
      "A  /home/user/new.txt  file 6 bytes",
      "M  /home/user/notes.txt  size, content  (14 bytes → 17 bytes)",
    ]);
    expect(diff.out).toContain("--- a/home/user/notes.txt");
    expect(diff.out).toMatch(/^-two$/m);
    expect(diff.out).toMatch(/^\+2$/m);
    expect(diff.out).toMatch(/^\+four$/m);
    expect(diff.out).toMatch(/^\+hello$/m);
    expect(cli("diff", bundle, "1", "1").out).toBe("no changes\n");
  }, 60_000);

  it("says what is wrong: an unknown point, a disk with no ext4, a damaged file", async () => {
    const unknown = cli("ls", bundle, "nonesuch");
    expect(unknown.status).toBe(2);
    expect(unknown.err).toMatch(/no point is named "nonesuch"/);
    // A FAT-only disk: no ext4 anywhere.
    const fat = join(work.dir, "fat.disk");
    spawnSync("truncate", ["-s", "8M", fat]);
    expect(spawnSync("mkfs.vfat", ["-F", "16", "-s", "1", fat]).status).toBe(0);
    const files = new Map<ChunkRef, Uint8Array>();
    const fatBundle = join(work.dir, "fat.sandglass");
    writeFileSync(fatBundle, encodePoints([await pointOf(fat, "fat", 1_700_000_000_000, files)], files));
    const noExt = cli("ls", fatBundle, "0");
    expect(noExt.status).toBe(1);
    expect(noExt.err.trim()).toBe("can't read files on this disk: it has no ext2, ext3 or ext4 file system (only those can be read)");
    const damaged = readFileSync(bundle);
    damaged[damaged.length - 100]! ^= 0xff;
    writeFileSync(join(work.dir, "damaged.sandglass"), damaged);
    const bad = cli("points", join(work.dir, "damaged.sandglass"));
    expect(bad.status).toBe(1);
    expect(bad.err).toMatch(/not a usable Sandglass snapshot/);
  }, 60_000);
});
