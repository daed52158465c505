/**
 * The ext4 reader's parts against e2fsprogs: jbd2 replay (committed transactions, revokes,
 * escaped blocks, checksummed and 32-bit journals, a transaction cut before its commit) compared
 * with `debugfs jr` (e2fsprogs' own recovery); partition tables (MBR like Sandglass's images, a
 * logical partition, GPT, several ext4 partitions); inline data; the ext2 triple-indirect map;
 * what a FAT disk, random bytes and damaged images give (UnreadableDiskError, in bounded time);
 * and the worker's calls (list, stat, read, zip, text diff, the consistency flag).
 */
import { execFileSync } from "node:child_process";
import { closeSync, copyFileSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { strFromU8, unzipSync } from "fflate";
import { afterAll, describe, expect, it } from "vitest";
import { memoryDevice } from "../../src/engine/ext4/block-device.ts";
import { Ext4 } from "../../src/engine/ext4/ext4.ts";
import { INODE_FLAG_INLINE_DATA, UnreadableDiskError } from "../../src/engine/ext4/ext4-format.ts";
import {
  FileNotFoundError,
  listDirectory,
  openFiles,
  pointInfo,
  readFile,
  readFilePieces,
  statPath,
  textDiff,
  zipFolder,
} from "../../src/engine/ext4/files.ts";
import { findVolumes } from "../../src/engine/ext4/partitions.ts";
import { debugfs, mke2fs, partitionedDisk, pattern, reference, scratch } from "./ext4-tools.ts";

const work = scratch();
afterAll(() => work.cleanup());
const host = (name: string, data: string | Uint8Array) => {
  const path = join(work.dir, name);
  writeFileSync(path, data);
  return path;
};
const open = (path: string) => Ext4.open(memoryDevice(new Uint8Array(readFileSync(path))));
const bmap = (image: string, path: string, block: number) => Number(debugfs(image, [`bmap "${path}" ${block}`], false).trim().split("\n").at(-1));

/** The reader's view of every path equals debugfs's on `refImage` (stat + rdump). */
async function sameAsDebugfs(fs: Ext4, refImage: string): Promise<void> {
  const view = new Map<string, unknown>();
  for await (const { path, inode } of fs.walk("/")) {
    const s = await fs.statInode(inode, path);
    view.set(path, {
      kind: s.kind,
      mode: s.mode & 0o7777,
      uid: s.uid,
      gid: s.gid,
      ...(s.kind === "file" ? { size: s.size, content: Buffer.from(await fs.read(inode, 0, s.size)).toString("base64") } : {}),
      ...(s.kind === "symlink" ? { target: s.target } : {}),
    });
  }
  const ref = reference(refImage, [...view.keys()]);
  const want = new Map(
    [...ref].map(([p, r]) => [
      p,
      {
        kind: r.kind,
        mode: r.mode & 0o7777,
        uid: r.uid,
        gid: r.gid,
        ...(r.kind === "file" ? { size: r.size, content: r.content!.toString("base64") } : {}),
        ...(r.kind === "symlink" ? { target: r.target } : {}),
      },
    ]),
  );
  expect(view).toEqual(want);
}

describe("jbd2 replay", () => {
  const variants = [
    { name: "64-bit journal with checksums (v3)", mkfs: ["-t", "ext4", "-b", "1024"], open: "jo -c" },
    { name: "32-bit journal without checksums", mkfs: ["-t", "ext4", "-b", "1024", "-O", "^64bit"], open: "jo" },
    { name: "4 KiB blocks", mkfs: ["-t", "ext4", "-b", "4096"], open: "jo -c" },
  ];
  for (const v of variants) {
    it(`${v.name}: committed transactions are applied as e2fsprogs' recovery applies them`, async () => {
      const image = join(work.dir, `journal-${v.open.length}-${v.mkfs.length}-${v.mkfs.at(-1)}.img`);
      mke2fs(image, 8, v.mkfs);
      const bs = v.mkfs.includes("4096") ? 4096 : 1024;
      debugfs(image, [`write ${host("a", pattern(3 * bs, 1))} a`, `write ${host("b", pattern(bs, 2))} b`, `write ${host("c", pattern(bs, 3))} c`]);
      const [pa, pb, pc] = [bmap(image, "/a", 0), bmap(image, "/b", 0), bmap(image, "/c", 0)];
      // /b's inode table block with /b's mode changed to 0600 (by debugfs on a copy, so its
      // checksum is right), journalled: the new mode is in the journal only.
      const fs0 = await open(image);
      const loc = fs0.inodeLocation((await fs0.lookup("/b"))!.ino);
      const chmodded = `${image}.chmod`;
      copyFileSync(image, chmodded);
      debugfs(chmodded, ["sif /b mode 0100600"]);
      const table = readFileSync(chmodded).subarray(loc.block * bs, (loc.block + 1) * bs);
      const escaped = Buffer.concat([Buffer.from([0xc0, 0x3b, 0x39, 0x98]), pattern(bs - 4, 9)]);
      debugfs(image, [
        v.open,
        `jw -b ${pa} ${host("y", pattern(bs, 5))}`, // T1: /a block 0, revoked by T2
        `jw -r ${pa} ${host("empty", "")}`, // T2
        `jw -b ${pb} ${host("z", pattern(bs, 6))}`, // T3: /b's data
        `jw -b ${pc} ${host("e", escaped)}`, // T4: a block that starts with the journal's magic
        `jw -b ${loc.block} ${host("it", table)}`, // T5: /b's inode
        "jc",
      ]);
      const fs = await open(image);
      expect(fs.journal).toMatchObject({ present: true, replayed: true, uncommitted: false });
      expect(fs.journal.transactions).toBeGreaterThanOrEqual(5);
      const recovered = `${image}.recovered`;
      copyFileSync(image, recovered);
      debugfs(recovered, ["jr"]);
      await sameAsDebugfs(fs, recovered);
      // What the scenario means, spelled out: T1 revoked, the others applied, the escape undone.
      expect(Buffer.from(await readFile(fs, "/a", 0, bs)).equals(pattern(bs, 1))).toBe(true);
      expect(Buffer.from(await readFile(fs, "/b")).equals(pattern(bs, 6))).toBe(true);
      expect(Buffer.from(await readFile(fs, "/c")).equals(escaped)).toBe(true);
      expect((await statPath(fs, "/b")).mode & 0o7777).toBe(0o600);
      // Without replay the reader sees the blocks where they are.
      const raw = await Ext4.open(memoryDevice(new Uint8Array(readFileSync(image))), { replay: false });
      expect((await statPath(raw, "/b")).mode & 0o7777).toBe(0o644);

      // The last transaction cut before its commit block: dropped, and said so.
      const log = debugfs(image, ["logdump"], false);
      const commits = [...log.matchAll(/type 2 \(commit block\) at block (\d+)/g)].map((m) => Number(m[1]));
      const lastCommit = bmap(image, "<8>", commits.at(-1)!);
      const cut = `${image}.cut`;
      copyFileSync(image, cut);
      const fd = openSync(cut, "r+");
      writeSync(fd, new Uint8Array(bs), 0, bs, lastCommit * bs);
      closeSync(fd);
      const cutFs = await open(cut);
      expect(cutFs.journal).toMatchObject({ replayed: true, uncommitted: true, transactions: fs.journal.transactions - 1 });
      expect(pointInfo(cutFs)).toMatchObject({ mayBeInconsistent: true, reasons: ["the journal ends in a transaction that was not committed"] });
      const cutRecovered = `${cut}.recovered`;
      copyFileSync(cut, cutRecovered);
      debugfs(cutRecovered, ["jr"]);
      await sameAsDebugfs(cutFs, cutRecovered);
      expect((await statPath(cutFs, "/b")).mode & 0o7777).toBe(0o644);
    }, 60_000);
  }
});

describe("partitions", () => {
  it("finds the ext4 root of a Sandglass-shaped MBR disk, a GPT disk, a logical partition, and several", async () => {
    const root = join(work.dir, "root.img");
    mke2fs(root, 8, ["-t", "ext4", "-L", "sandglass"]);
    debugfs(root, [`write ${host("hello", "hello\n")} hello`]);
    for (const gpt of [false, true]) {
      const disk = join(work.dir, `disk-${gpt}.img`);
      const { ext4Offset } = partitionedDisk(disk, root, gpt);
      const files = await openFiles(memoryDevice(new Uint8Array(readFileSync(disk))));
      expect(files.volumes).toEqual([{ number: 2, offset: ext4Offset, size: readFileSync(root).byteLength, table: gpt ? "gpt" : "mbr", label: "" }]);
      expect(new TextDecoder().decode(await readFile(files.fs, "/hello"))).toBe("hello\n");
      expect(files.fs.sb.volumeName).toBe("sandglass");
    }
    // An extended partition holding a logical one (sda5), and a primary one too.
    const multi = join(work.dir, "multi.img");
    writeFileSync(multi, "");
    const size = readFileSync(root).byteLength / 512;
    truncateSync(multi, (2048 + size + 2048 + 2048 + size + 2048) * 512);
    const start2 = 2048 + size + 2048;
    execFileSync("sfdisk", ["--quiet", multi], { input: `label: dos\nstart=2048, size=${size}, type=83\nstart=${start2}, size=${size + 4096}, type=5\nstart=${start2 + 2048}, size=${size}, type=83\n` });
    execFileSync("dd", [`if=${root}`, `of=${multi}`, "bs=512", "seek=2048", "conv=notrunc", "status=none"]);
    execFileSync("dd", [`if=${root}`, `of=${multi}`, "bs=512", `seek=${start2 + 2048}`, "conv=notrunc", "status=none"]);
    const device = memoryDevice(new Uint8Array(readFileSync(multi)));
    expect((await findVolumes(device)).map((v) => [v.number, v.offset / 512])).toEqual([
      [1, 2048],
      [5, start2 + 2048],
    ]);
    const fifth = await openFiles(device, { volume: 5 });
    expect(fifth.volume.number).toBe(5);
    await expect(openFiles(device, { volume: 3 })).rejects.toThrow("can't read files on this disk: it has no ext2/3/4 file system on partition 3");
    // A whole-disk file system.
    expect((await openFiles(memoryDevice(new Uint8Array(readFileSync(root))))).volume).toMatchObject({ number: 0, table: "disk" });
  }, 60_000);

  it("says a FAT disk, an empty disk and random bytes have no files it can read", async () => {
    const fat = join(work.dir, "fat.img");
    writeFileSync(fat, "");
    truncateSync(fat, 16 * 2 ** 20);
    execFileSync("mkfs.vfat", ["-F", "16", fat], { stdio: "ignore" });
    const noExt = "can't read files on this disk: it has no ext2, ext3 or ext4 file system (only those can be read)";
    await expect(openFiles(memoryDevice(new Uint8Array(readFileSync(fat))))).rejects.toThrow(noExt);
    await expect(openFiles(memoryDevice(new Uint8Array(4 * 2 ** 20)))).rejects.toThrow(noExt);
    await expect(openFiles(memoryDevice(new Uint8Array(100)))).rejects.toThrow(UnreadableDiskError);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 4096, maxLength: 65536 }), async (bytes) => {
        await expect(openFiles(memoryDevice(bytes))).rejects.toThrow(UnreadableDiskError);
      }),
      { numRuns: 50 },
    );
  });
});

describe("file shapes", () => {
  it("reads inline data files and directories as debugfs does", async () => {
    const image = join(work.dir, "inline.img");
    mke2fs(image, 8, ["-t", "ext4", "-O", "inline_data", "-I", "256"]);
    const cmds = ["mkdir /small", "mkdir /small/sub", 'symlink /small/link "target-of-a-link"'];
    for (const size of [0, 10, 59, 60, 61, 100, 150, 5000]) cmds.push("cd /small", `write ${host(`s${size}`, pattern(size, size))} f${size}`);
    debugfs(image, cmds);
    const fs = await open(image);
    expect((await fs.lookup("/small/f10"))!.flags & INODE_FLAG_INLINE_DATA).not.toBe(0);
    expect((await fs.lookup("/small/f100"))!.flags & INODE_FLAG_INLINE_DATA).not.toBe(0);
    expect((await fs.lookup("/small/sub"))!.flags & INODE_FLAG_INLINE_DATA).not.toBe(0);
    await sameAsDebugfs(fs, image);
  }, 60_000);

  it("reads an ext2 file through its triple-indirect block", async () => {
    const image = join(work.dir, "ext2.img");
    mke2fs(image, 8, ["-t", "ext2", "-b", "1024"]);
    // Past 12 + 256 + 65536 KiB a 1 KiB-block file needs the triple-indirect level.
    const far = join(work.dir, "far");
    writeFileSync(far, "");
    truncateSync(far, 66 * 2 ** 20 + 5000);
    const fd = openSync(far, "r+");
    writeSync(fd, pattern(100, 1), 0, 100, 0);
    writeSync(fd, pattern(5000, 2), 0, 5000, 66 * 2 ** 20);
    closeSync(fd);
    debugfs(image, [`write ${far} far`]);
    const fs = await open(image);
    const inode = (await fs.lookup("/far"))!;
    expect(new DataView(inode.iBlock.buffer, inode.iBlock.byteOffset).getUint32(14 * 4, true)).not.toBe(0);
    const tail = await readFile(fs, "/far", 66 * 2 ** 20, 5000);
    expect(Buffer.from(tail).equals(pattern(5000, 2))).toBe(true);
    expect(Buffer.from(await readFile(fs, "/far", 0, 200)).equals(Buffer.concat([pattern(100, 1), Buffer.alloc(100)]))).toBe(true);
    const whole = execFileSync("debugfs", ["-R", "cat /far", image], { maxBuffer: 128 * 2 ** 20, stdio: ["ignore", "pipe", "ignore"] });
    const pieces: Uint8Array[] = [];
    for await (const p of readFilePieces(fs, "/far", 8 * 2 ** 20)) pieces.push(p);
    expect(Buffer.concat(pieces).equals(whole)).toBe(true);
  }, 60_000);
});

describe("damaged images", () => {
  it("end in UnreadableDiskError or a correct read, never a hang or another error", async () => {
    const image = join(work.dir, "victim.img");
    mke2fs(image, 4, ["-t", "ext4", "-b", "1024", "-N", "128"]);
    debugfs(image, ["mkdir /d", `write ${host("v1", pattern(20_000, 1))} /d/file`, 'symlink /d/l "somewhere"', `write ${host("v2", "x")} x`]);
    const sparse = join(work.dir, "vsparse");
    writeFileSync(sparse, "");
    truncateSync(sparse, 200_000);
    const fd = openSync(sparse, "r+");
    for (let i = 0; i < 8; i++) writeSync(fd, pattern(100, i), 0, 100, i * 25_000);
    closeSync(fd);
    debugfs(image, ["cd /d", `write ${sparse} sparse`]);
    const pristine = new Uint8Array(readFileSync(image));
    // Flips land in the metadata in use: superblock, descriptors, the used inodes, directory
    // blocks and the sparse file's extent block.
    const fs0 = await Ext4.open(memoryDevice(pristine));
    const regions: [number, number][] = [[1024, 2048], [2048, 3072]];
    const table = fs0.groups[0]!.inodeTable * 1024;
    regions.push([table, table + 16 * fs0.sb.inodeSize]);
    for (const path of ["/", "/d"]) {
      const map = await fs0.blockMap((await fs0.lookup(path))!);
      for (const r of map.runs) regions.push([r.physical * 1024, (r.physical + r.count) * 1024]);
    }
    for (const m of (await fs0.blockMap((await fs0.lookup("/d/sparse"))!)).meta) regions.push([m * 1024, m * 1024 + 1024]);
    const offsets = regions.flatMap(([from, to]) => Array.from({ length: to - from }, (_, i) => from + i));
    const walkAll = async (bytes: Uint8Array) => {
      const fs = await Ext4.open(memoryDevice(bytes));
      for await (const { inode, path } of fs.walk("/")) {
        const s = await fs.statInode(inode, path);
        if (s.kind === "file") await fs.read(inode, 0, Math.min(s.size, 2 ** 20));
      }
    };
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.nat(offsets.length - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 12 }), async (flips) => {
        const bytes = pristine.slice();
        for (const [i, x] of flips) bytes[offsets[i]!]! ^= x;
        const outcome = await Promise.race([
          walkAll(bytes).then(
            () => "ok",
            (err: unknown) => (err instanceof UnreadableDiskError ? "refused" : err),
          ),
          new Promise((r) => setTimeout(() => r("timeout"), 10_000)),
        ]);
        expect(["ok", "refused"]).toContain(outcome);
      }),
      { numRuns: 250, seed: 7 },
    );
  }, 120_000);

  it("names the damage in the message", async () => {
    const image = join(work.dir, "named.img");
    mke2fs(image, 4, ["-t", "ext4", "-b", "1024"]);
    const bytes = new Uint8Array(readFileSync(image));
    const noMagic = bytes.slice();
    noMagic[1024 + 0x38] = 0;
    await expect(Ext4.open(memoryDevice(noMagic))).rejects.toThrow("can't read files on this disk: no ext2/ext3/ext4 file system was found");
    const badGroup = bytes.slice();
    new DataView(badGroup.buffer).setUint32(1024 + 0x20, 0, true);
    await expect(Ext4.open(memoryDevice(badGroup))).rejects.toThrow("can't read files on this disk: its blocks per group is damaged");
    const fs = await Ext4.open(memoryDevice(bytes));
    const root = await fs.inode(2);
    const block = (await fs.blockMap(root)).runs[0]!.physical;
    const badDir = bytes.slice();
    new DataView(badDir.buffer).setUint16(block * 1024 + 4, 0, true);
    await expect(listDirectory(await Ext4.open(memoryDevice(badDir)), "/")).rejects.toThrow(/can't read files on this disk: directory 2 is damaged/);
  });
});

describe("the worker's calls", () => {
  it("lists, stats, reads and zips a folder; missing paths are FileNotFoundError", async () => {
    const image = join(work.dir, "calls.img");
    mke2fs(image, 8, ["-t", "ext4"]);
    debugfs(image, [
      "mkdir /etc",
      "mkdir /etc/empty",
      `write ${host("fstab", "/dev/sda2 / ext4 rw 0 1\n")} /etc/fstab`,
      "cd /etc",
      `write ${host("blob", pattern(300_000, 4))} blob`,
      'symlink /etc/mtab "/proc/self/mounts"',
      "sif /etc/blob mode 0100755",
    ]);
    const { fs } = await openFiles(memoryDevice(new Uint8Array(readFileSync(image))));
    expect((await listDirectory(fs, "/etc")).map((s) => [s.path, s.kind, s.size])).toEqual([
      ["/etc/blob", "file", 300_000],
      ["/etc/empty", "dir", fs.blockSize],
      ["/etc/fstab", "file", 24],
      ["/etc/mtab", "symlink", 17],
    ]);
    expect(await statPath(fs, "/etc/mtab")).toMatchObject({ kind: "symlink", target: "/proc/self/mounts" });
    await expect(statPath(fs, "/etc/nope")).rejects.toThrow(FileNotFoundError);
    await expect(readFile(fs, "/etc")).rejects.toThrow("/etc is not a regular file");
    await expect(listDirectory(fs, "/etc/fstab")).rejects.toThrow("/etc/fstab is not a directory");
    expect(Buffer.from(await readFile(fs, "/etc/blob", 100_000, 10)).equals(pattern(300_000, 4).subarray(100_000, 100_010))).toBe(true);

    const zip = unzipSync(await zipFolder(fs, "/etc"));
    expect(Object.keys(zip).sort()).toEqual(["etc/", "etc/blob", "etc/empty/", "etc/fstab", "etc/mtab"]);
    expect(strFromU8(zip["etc/fstab"]!)).toBe("/dev/sda2 / ext4 rw 0 1\n");
    expect(Buffer.from(zip["etc/blob"]!).equals(pattern(300_000, 4))).toBe(true);
    expect(strFromU8(zip["etc/mtab"]!)).toBe("/proc/self/mounts");
    // Unix modes travel in the central directory's external attributes (as Info-ZIP stores them).
    const bytes = await zipFolder(fs, "/etc");
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    const modes: Record<string, string> = {};
    for (let at = 0; at + 46 <= bytes.byteLength; at++) {
      if (view.getUint32(at, true) !== 0x02014b50) continue;
      const name = new TextDecoder().decode(bytes.subarray(at + 46, at + 46 + view.getUint16(at + 28, true)));
      modes[name] = (view.getUint32(at + 38, true) >>> 16).toString(8);
    }
    expect(modes).toMatchObject({ "etc/blob": "100755", "etc/mtab": "120777", "etc/fstab": "100644", "etc/empty/": "40755" });
    await expect(zipFolder(fs, "/etc", { maxBytes: 1000 })).rejects.toThrow(/more than/);
    expect(Object.keys(unzipSync(await zipFolder(fs, "/etc/fstab")))).toEqual(["fstab"]);
  });

  it("makes text diffs of small text files only", () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    expect(textDiff("/etc/hosts", enc("a\nb\nc\n"), enc("a\nB\nc\n"))).toContain("-b\n+B\n");
    expect(textDiff("/new", null, enc("x\n"))).toContain("+++ b/new");
    expect(textDiff("/bin/ls", new Uint8Array([0x7f, 0x45, 0, 1]), enc("x"))).toBeNull();
    expect(textDiff("/big", new Uint8Array(300 * 1024).fill(65), enc("x"))).toBeNull();
  });

  it("flags points taken mid-write", async () => {
    const image = join(work.dir, "flag.img");
    mke2fs(image, 4, ["-t", "ext4"]);
    const fs = await open(image);
    expect(pointInfo(fs)).toMatchObject({ mayBeInconsistent: false, reasons: [] });
    expect(pointInfo(fs, { kind: "checkpoint", sinceLastWriteMs: 200 })).toMatchObject({
      mayBeInconsistent: true,
      reasons: ["the disk was being written when this point was taken"],
    });
    expect(pointInfo(fs, { kind: "checkpoint", sinceLastWriteMs: 5000 }).mayBeInconsistent).toBe(false);
    expect(pointInfo(fs, { kind: "quiet", sinceLastWriteMs: 200 }).mayBeInconsistent).toBe(false);
  });
});
