/**
 * Host-side ext4 tools for the reader's tests: images made with e2fsprogs (mke2fs, debugfs,
 * e2fsck), changed with `debugfs -w`, and debugfs's own view of every file (stat and rdump) as
 * the reference the reader must match.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { memoryDevice, type BlockDevice } from "../../src/engine/ext4/block-device.ts";

/** A scratch folder removed by cleanup(). */
export function scratch(prefix = "sandglass-ext4-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Runs debugfs commands (one per line) on an image; throws on any error it prints. */
export function debugfs(image: string, commands: string[], write = true): string {
  const dir = mkdtempSync(join(tmpdir(), "sandglass-debugfs-"));
  try {
    const file = join(dir, "cmds");
    writeFileSync(file, commands.join("\n") + "\n");
    const run = spawnSync("debugfs", [...(write ? ["-w"] : []), "-f", file, image], { encoding: "latin1", maxBuffer: 256 * 1024 * 1024 });
    const errors = run.stderr
      .split("\n")
      .filter((l) => l.trim() && !l.startsWith("debugfs ") && !/^debugfs: /.test(l));
    if (run.status !== 0 || errors.length > 0) throw new Error(`debugfs failed on ${commands.join("; ")}:\n${run.stderr}`);
    return run.stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function mke2fs(image: string, sizeMiB: number, options: string[], root?: string): void {
  execFileSync("mke2fs", ["-q", "-F", ...options, ...(root ? ["-d", root] : []), image, `${sizeMiB}M`], {
    env: { ...process.env, E2FSPROGS_FAKE_TIME: "1700000000", MKE2FS_DEVICE_SECTSIZE: "512" },
  });
}

/** e2fsck -fy (and -D: index and compact directories, so larger ones become htree). */
export function fsck(image: string, optimizeDirs = false): void {
  const run = spawnSync("e2fsck", ["-fy", ...(optimizeDirs ? ["-D"] : []), image], { encoding: "utf8" });
  if ((run.status ?? 8) >= 4) throw new Error(`e2fsck failed (${run.status}):\n${run.stdout}\n${run.stderr}`);
}

export function fileDevice(path: string): BlockDevice {
  return memoryDevice(new Uint8Array(readFileSync(path)));
}

/** What debugfs says one path is. */
export interface RefFile {
  kind: "file" | "dir" | "symlink" | "other";
  mode: number;
  uid: number;
  gid: number;
  size: number;
  target?: string;
  content?: Buffer;
}

const TYPES: Record<string, RefFile["kind"]> = { regular: "file", directory: "dir", symlink: "symlink" };

/**
 * debugfs's view of every path in `paths`: `stat` (type, mode, owner, size) and `rdump` of the
 * whole tree for contents and link targets.
 */
export function reference(image: string, paths: string[]): Map<string, RefFile> {
  const out = new Map<string, RefFile>();
  const text = debugfs(image, paths.map((p) => `stat "${p}"`), false);
  const sections = text.split(/^debugfs: stat "/m).slice(1);
  const { dir, cleanup } = scratch("sandglass-rdump-");
  try {
    debugfs(image, [`rdump / ${dir}`], false);
    for (const section of sections) {
      const path = section.slice(0, section.indexOf('"'));
      const type = /Type: (\w+)/.exec(section)?.[1] ?? "?";
      const mode = parseInt(/Mode:\s+(\d+)/.exec(section)![1]!, 8);
      const uid = Number(/User:\s+(\d+)/.exec(section)![1]);
      const gid = Number(/Group:\s+(\d+)/.exec(section)![1]);
      const size = Number(/Size: (\d+)/.exec(section)![1]);
      const kind = TYPES[type] ?? "other";
      const host = join(dir, path);
      const entry: RefFile = { kind, mode, uid, gid, size };
      // debugfs dumps an inline-data file's whole inline area (60 bytes and more) whatever its
      // size; the kernel, and the reader, stop at i_size.
      if (kind === "file") entry.content = readFileSync(host).subarray(0, size);
      if (kind === "symlink") entry.target = readlinkSync(host);
      out.set(path, entry);
    }
  } finally {
    cleanup();
  }
  return out;
}

/** Every path under `dir` on the host (for checks of rdump'd trees). */
export function hostTree(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = `${prefix}/${name}`;
    out.push(p);
    if (lstatSync(join(dir, name)).isDirectory()) out.push(...hostTree(join(dir, name), p));
  }
  return out;
}

/** A deterministic byte pattern (content of test files). */
export function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/**
 * A partitioned disk shaped like Sandglass's guests (scripts/image-lib.sh): partition 1 FAT16 (8 MiB here), partition
 * 2 the given ext4 image; `gpt` makes the same two partitions with a GPT.
 */
export function partitionedDisk(out: string, ext4Image: string, gpt = false): { ext4Offset: number } {
  const fatSectors = 8 * 2048;
  const extSectors = Math.ceil(readFileSync(ext4Image).byteLength / 512);
  const extStart = 2048 + fatSectors;
  const total = extStart + extSectors + (gpt ? 2048 : 0);
  writeFileSync(out, "");
  execFileSync("truncate", ["-s", String(total * 512), out]);
  const types = gpt ? ["EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"] : ["6", "83"];
  const script = `label: ${gpt ? "gpt" : "dos"}\nstart=2048, size=${fatSectors}, type=${types[0]}\nstart=${extStart}, size=${extSectors}, type=${types[1]}\n`;
  execFileSync("sfdisk", ["--quiet", out], { input: script });
  const fat = `${out}.fat`;
  execFileSync("truncate", ["-s", String(fatSectors * 512), fat]);
  execFileSync("mkfs.vfat", ["-F", "16", "-s", "1", fat], { stdio: "ignore" });
  execFileSync("dd", [`if=${fat}`, `of=${out}`, "bs=512", `seek=2048`, "conv=notrunc", "status=none"]);
  execFileSync("dd", [`if=${ext4Image}`, `of=${out}`, "bs=512", `seek=${extStart}`, "conv=notrunc", "status=none"]);
  rmSync(fat);
  return { ext4Offset: extStart * 512 };
}
