/**
 * The `.sandglass` file tool: files at the points a bundle holds, without a browser.
 *
 *   npm run sandglass -- points <file>                         the points in the file
 *   npm run sandglass -- ls <file> <point> [path]              a directory at a point
 *   npm run sandglass -- cat <file> <point> <path>             a file's bytes at a point (stdout)
 *   npm run sandglass -- diff <file> <pointA> <pointB> [--patch]
 *                                                              what changed from A to B, file by
 *                                                              file; --patch adds text diffs of
 *                                                              small text files
 *
 * A point is its index (0, 1, …), its name (a checkpoint's or bookmark's), or a prefix of its
 * snapshot or checkpoint id. Options: --volume N picks partition N when the disk has several
 * ext2/3/4 file systems (the first otherwise). Exit status 1 with a message for anything that
 * cannot be read (a damaged file, a disk that is not ext4), 2 for bad usage.
 */
import { readFile as readHostFile } from "node:fs/promises";
import { bundleDisk, changedChunkRanges, decodeBundlePoints, type BundlePoint } from "../src/engine/bundle.ts";
import {
  diffOpened,
  differingBlocks,
  FileNotFoundError,
  listDirectory,
  openFiles,
  readFile,
  readFilePieces,
  statPath,
  textDiff,
  type FileChange,
  type FileStat,
  type PointFiles,
} from "../src/engine/ext4/files.ts";

const USAGE = `usage: npm run sandglass -- points <file>
       npm run sandglass -- ls <file> <point> [path]
       npm run sandglass -- cat <file> <point> <path>
       npm run sandglass -- diff <file> <pointA> <pointB> [--patch]
options: --volume N (partition number, when the disk has several file systems)`;

class UsageError extends Error {}

/** The point a command-line word names: index, name, or id prefix; unique or an error. */
export function findPoint(points: BundlePoint[], word: string): number {
  if (/^\d+$/.test(word)) {
    const i = Number(word);
    if (i < points.length) return i;
    throw new UsageError(`there is no point ${i}: the file has ${points.length} (0 to ${points.length - 1})`);
  }
  const byName = points.flatMap((p, i) => (p.label.name === word ? [i] : []));
  if (byName.length === 1) return byName[0]!;
  if (byName.length > 1) throw new UsageError(`${byName.length} points are named "${word}": use an index (${byName.join(", ")})`);
  const byId = points.flatMap((p, i) => (p.manifest.name.startsWith(word) || p.label.checkpoint?.startsWith(word) ? [i] : []));
  if (byId.length === 1) return byId[0]!;
  if (byId.length > 1) throw new UsageError(`"${word}" starts ${byId.length} points' ids: give more of it`);
  throw new UsageError(`no point is named "${word}" or has an id starting so (see: npm run sandglass -- points <file>)`);
}

const when = (ms: number) => (ms ? new Date(ms).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "—");

function modeString(stat: FileStat): string {
  const type = { file: "-", dir: "d", symlink: "l", other: "?" }[stat.kind];
  const bits = "rwxrwxrwx".split("").map((c, i) => (stat.mode & (1 << (8 - i)) ? c : "-"));
  if (stat.mode & 0o4000) bits[2] = bits[2] === "x" ? "s" : "S";
  if (stat.mode & 0o2000) bits[5] = bits[5] === "x" ? "s" : "S";
  if (stat.mode & 0o1000) bits[8] = bits[8] === "x" ? "t" : "T";
  return type + bits.join("");
}

function describeChange(c: FileChange): string {
  const letter = { added: "A", removed: "D", modified: "M" }[c.change];
  const size = (n: number | undefined) => (n === undefined ? "" : `${n} bytes`);
  let detail: string;
  if (c.change === "modified") {
    detail = c.what.join(", ");
    if (c.what.includes("size") || c.what.includes("content")) detail += `  (${size(c.oldSize)} → ${size(c.newSize)})`;
  } else detail = [c.kind, size(c.change === "added" ? c.newSize : c.oldSize)].filter(Boolean).join(" ");
  return `${letter}  ${c.path}  ${detail}`;
}

async function main(argv: string[]): Promise<void> {
  const args = [...argv];
  let volume: number | undefined;
  const v = args.indexOf("--volume");
  if (v >= 0) {
    volume = Number(args[v + 1]);
    if (!Number.isSafeInteger(volume)) throw new UsageError("--volume needs a partition number");
    args.splice(v, 2);
  }
  const patch = args.includes("--patch");
  const words = args.filter((a) => a !== "--patch");
  const [command, file, ...rest] = words;
  if (!command || !file || !["points", "ls", "cat", "diff"].includes(command)) throw new UsageError(USAGE);
  const { points, contents } = await decodeBundlePoints(new Uint8Array(await readHostFile(file)));
  const open = (i: number): Promise<PointFiles> => openFiles(bundleDisk(points[i]!.manifest, contents), volume === undefined ? {} : { volume });
  const write = (text: string) => process.stdout.write(text);

  if (command === "points") {
    points.forEach((p, i) => {
      const where = p.label.branch === undefined ? "" : `  branch ${p.label.branch}${p.label.seq === undefined ? "" : ` write ${p.label.seq}`}`;
      write(`${i}  ${when(p.label.time)}  ${p.label.name ?? "(unnamed)"}${where}  ${p.manifest.name}\n`);
    });
    return;
  }
  if (command === "ls") {
    const [pointWord, path = "/"] = rest;
    if (!pointWord) throw new UsageError(USAGE);
    const at = await open(findPoint(points, pointWord));
    const stat = await statPath(at.fs, path);
    const list = stat.kind === "dir" ? await listDirectory(at.fs, path) : [stat];
    for (const s of list) {
      const name = stat.kind === "dir" ? s.path.slice(s.path.lastIndexOf("/") + 1) : s.path;
      const link = s.target === undefined ? "" : ` -> ${s.target}`;
      write(`${modeString(s)} ${String(s.uid).padStart(5)} ${String(s.gid).padStart(5)} ${String(s.size).padStart(10)} ${when(s.mtime * 1000)}  ${name}${link}\n`);
    }
    return;
  }
  if (command === "cat") {
    const [pointWord, path] = rest;
    if (!pointWord || !path) throw new UsageError(USAGE);
    const at = await open(findPoint(points, pointWord));
    for await (const piece of readFilePieces(at.fs, path)) {
      if (!process.stdout.write(piece)) await new Promise((r) => process.stdout.once("drain", r));
    }
    return;
  }
  const [wordA, wordB] = rest;
  if (!wordA || !wordB) throw new UsageError(USAGE);
  const [ia, ib] = [findPoint(points, wordA), findPoint(points, wordB)];
  const [a, b] = await Promise.all([open(ia), open(ib)]);
  // Chunks that differ, narrowed to the blocks that do (both sides are in the file anyway).
  const [da, db] = [bundleDisk(points[ia]!.manifest, contents), bundleDisk(points[ib]!.manifest, contents)];
  const changed = await differingBlocks(da, db, changedChunkRanges(points[ia]!.manifest, points[ib]!.manifest));
  const diff = await diffOpened(a, b, changed);
  for (const [side, info] of [["A", diff.a], ["B", diff.b]] as const) {
    if (info.journal.replayed) write(`# ${side}: ${info.journal.transactions} journal transaction(s) replayed (${info.journal.blocks} blocks)\n`);
    if (info.mayBeInconsistent) write(`# ${side} may be inconsistent: ${info.reasons.join("; ")}\n`);
  }
  for (const note of diff.notes) write(`# ${note}\n`);
  for (const c of diff.changes) write(`${describeChange(c)}\n`);
  if (diff.changes.length === 0) write("no changes\n");
  if (!patch) return;
  for (const c of diff.changes) {
    if (c.kind !== "file") continue;
    const before = c.change === "added" ? null : await readFile(a.fs, c.path, 0, 2 ** 20).catch(() => null);
    const after = c.change === "removed" ? null : await readFile(b.fs, c.path, 0, 2 ** 20).catch(() => null);
    if (c.change === "modified" && !c.what.includes("content")) continue;
    const text = textDiff(c.path, before, after);
    if (text) write(text.replace(/^=+\n/, ""));
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    if (err instanceof UsageError) {
      console.error(err.message);
      process.exit(2);
    }
    console.error(err instanceof FileNotFoundError || err instanceof Error ? err.message : String(err));
    process.exit(1);
  });
}
