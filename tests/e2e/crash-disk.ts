/**
 * The host's half of "the write log replays to every quiet point": the disk a machine had at a
 * point is rebuilt here from its base image (read from the repository folder, as the page's
 * copy-on-read disk reads it) and the chunks the machine changed by then (read in the page through
 * its own engine, DiskService.changedChunksAt/readAt), and the guest's root file system on it is
 * checked with e2fsprogs, as after a power cut: the journal is replayed first (a cut leaves one to
 * replay, which is no error), then `e2fsck -fn` must find nothing.
 *
 * Chunks travel from the page to a loopback HTTP receiver started here, named by SHA-256 and sent
 * only when the host lacks them: the same file's chunks repeat from one point to the next, so a
 * point costs its changed chunks' reads and hashes in the page and little transfer.
 */
import { createHash } from "node:crypto";
import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import { copyFile, mkdir, open, readFile, writeFile, access } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import type { Page } from "@playwright/test";
import type { DiskManifest } from "../../src/engine/repo-format.ts";
import type { Point } from "../../src/engine/store-format.ts";

/** Chunks the page reads and hashes at once (Comlink calls in flight to the disk worker). */
const READ_CONCURRENCY = 16;

/** Where a receiver keeps what it got: a chunk under its hash, a file under its name. */
function receivedPath(dir: string, kind: "chunk" | "file", name: string): string {
  return join(dir, kind === "chunk" ? "chunks" : "files", name);
}

/** A loopback HTTP server that keeps what the page POSTs: chunks by hash, and whole files. */
export class Receiver {
  private constructor(
    private readonly server: Server,
    readonly url: string,
    private readonly dir: string,
  ) {}

  /** Listens on 127.0.0.1 (any free port); keeps what it receives under `dir`. */
  static async start(dir: string): Promise<Receiver> {
    await mkdir(join(dir, "chunks"), { recursive: true });
    await mkdir(join(dir, "files"), { recursive: true });
    const server = createServer((req, res) => {
      // The page is on another origin (the app's server): it may POST bytes here.
      res.setHeader("Access-Control-Allow-Origin", "*");
      res.setHeader("Access-Control-Allow-Methods", "GET, POST");
      res.setHeader("Access-Control-Allow-Headers", "Content-Type");
      if (req.method === "OPTIONS") return res.writeHead(204).end();
      const match = /^\/(chunk|file)\/([A-Za-z0-9._-]+)$/.exec(req.url ?? "");
      // A file received is sent back on GET: the page opens a bundle from here (Receiver.fileUrl).
      if (req.method === "GET" && match?.[1] === "file") {
        readFile(receivedPath(dir, "file", match[2]!)).then(
          (body) => res.writeHead(200, { "Content-Type": "application/octet-stream" }).end(body),
          () => res.writeHead(404).end(),
        );
        return;
      }
      if (req.method !== "POST" || !match) return res.writeHead(404).end();
      const parts: Buffer[] = [];
      req.on("data", (d: Buffer) => parts.push(d));
      req.on("end", () => {
        const body = Buffer.concat(parts);
        const kind = match[1] as "chunk" | "file";
        const name = match[2]!;
        if (kind === "chunk" && createHash("sha256").update(body).digest("hex") !== name) return res.writeHead(400).end("hash mismatch");
        writeFile(receivedPath(dir, kind, name), body).then(
          () => res.writeHead(204).end(),
          (err: unknown) => res.writeHead(500).end(String(err)),
        );
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (!address || typeof address === "string") throw new Error("receiver has no port");
    return new Receiver(server, `http://127.0.0.1:${address.port}`, dir);
  }

  chunkPath(hash: string): string {
    return receivedPath(this.dir, "chunk", hash);
  }

  filePath(name: string): string {
    return receivedPath(this.dir, "file", name);
  }

  /** Where the page can fetch a file received here. */
  fileUrl(name: string): string {
    return `${this.url}/file/${name}`;
  }

  async hasChunk(hash: string): Promise<boolean> {
    return access(this.chunkPath(hash)).then(
      () => true,
      () => false,
    );
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Where a partition lies on the disk, in bytes (from the MBR). */
export interface Partition {
  start: number;
  bytes: number;
}

/** Partition `n` (1-4) of an MBR disk image. */
export async function mbrPartition(image: string, n: number): Promise<Partition> {
  const file = await open(image, "r");
  try {
    const mbr = Buffer.alloc(512);
    await file.read(mbr, 0, 512, 0);
    if (mbr.readUInt16LE(510) !== 0xaa55) throw new Error(`${image} has no MBR`);
    const entry = 446 + 16 * (n - 1);
    return { start: mbr.readUInt32LE(entry + 8) * 512, bytes: mbr.readUInt32LE(entry + 12) * 512 };
  } finally {
    await file.close();
  }
}

/**
 * Writes the disk a repository manifest (image or snapshot) describes to `path`: each chunk file
 * read from the repository folder, checked against its name, gzip'd ones inflated; null chunks
 * are zeros (left as holes).
 */
export async function writeBaseDisk(repoRoot: string, manifest: DiskManifest, path: string): Promise<void> {
  const file = await open(path, "w");
  try {
    await file.truncate(manifest.size);
    for (const [i, ref] of manifest.chunks.entries()) {
      if (ref === null) continue;
      const stored = await readFile(join(repoRoot, "chunks", ref));
      const bytes = ref.endsWith(".gz") ? gunzipSync(stored) : stored;
      if (createHash("sha256").update(bytes).digest("hex") !== ref.replace(/\.gz$/, "")) throw new Error(`chunk ${ref} is damaged`);
      await file.write(bytes, 0, bytes.byteLength, i * manifest.chunkSize);
    }
  } finally {
    await file.close();
  }
}

/** The changed chunks of a point as the page's engine reads them: [chunk index, SHA-256 hex]. */
type ChunkList = [number, string][];

/**
 * Asks the page's engine for the chunks the machine changed as seen from `point`, reads and hashes
 * them there, and has the page send the ones the receiver lacks. Returns the list.
 */
export async function fetchChangedChunks(page: Page, point: Point, receiver: Receiver, chunkSize: number): Promise<ChunkList> {
  const list = await page.evaluate(
    async ({ point, chunkSize, concurrency }) => {
      type Api = {
        changedChunksAt(p: { branch: number; seq: number }): Promise<number[]>;
        readAt(p: { branch: number; seq: number }, offset: number, length: number): Promise<Uint8Array>;
      };
      const api = (window as unknown as { sandglass: { debug: { api: Api } } }).sandglass.debug.api;
      const held = new Map<string, Uint8Array>();
      (window as unknown as { crashChunks: Map<string, Uint8Array> }).crashChunks = held;
      const indexes = await api.changedChunksAt(point);
      const out: [number, string][] = [];
      let next = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < indexes.length) {
            const index = indexes[next++]!;
            const bytes = await api.readAt(point, index * chunkSize, chunkSize);
            const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
            const hash = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
            held.set(hash, bytes);
            out.push([index, hash]);
          }
        }),
      );
      return out.sort((a, b) => a[0] - b[0]);
    },
    { point, chunkSize, concurrency: READ_CONCURRENCY },
  );
  const missing: string[] = [];
  for (const hash of new Set(list.map(([, h]) => h))) if (!(await receiver.hasChunk(hash))) missing.push(hash);
  await page.evaluate(
    async ({ missing, url }) => {
      const held = (window as unknown as { crashChunks: Map<string, Uint8Array> }).crashChunks;
      for (const hash of missing) {
        const response = await fetch(`${url}/chunk/${hash}`, { method: "POST", body: held.get(hash)! as Uint8Array<ArrayBuffer> });
        if (!response.ok) throw new Error(`receiver refused chunk ${hash}: ${response.status}`);
      }
      held.clear();
    },
    { missing, url: receiver.url },
  );
  return list;
}

/** What e2fsprogs said about one rebuilt file system. */
export interface FsckResult {
  ok: boolean;
  /** Exit codes of the journal replay and of the read-only full check. */
  replay: number;
  check: number;
  output: string;
}

/**
 * Rebuilds `partition` of the disk at a point (base partition image + changed chunks) in `work`
 * and checks it: `e2fsck -E journal_only -y` replays the journal (exit 0 or 1: replayed), then
 * `e2fsck -fn` must exit 0.
 */
export async function fsckPoint(
  basePartition: string,
  partition: Partition,
  chunks: ChunkList,
  chunkSize: number,
  receiver: Receiver,
  work: string,
): Promise<FsckResult> {
  await copyFile(basePartition, work);
  const file = await open(work, "r+");
  try {
    for (const [index, hash] of chunks) {
      const at = index * chunkSize;
      if (at + chunkSize <= partition.start || at >= partition.start + partition.bytes) continue;
      const bytes = await readFile(receiver.chunkPath(hash));
      // Clip to the partition (a chunk may straddle its start or end).
      const from = Math.max(at, partition.start);
      const to = Math.min(at + chunkSize, partition.start + partition.bytes);
      await file.write(bytes, from - at, to - from, from - partition.start);
    }
  } finally {
    await file.close();
  }
  const replay = await run("e2fsck", ["-E", "journal_only", "-y", work]);
  const check = await run("e2fsck", ["-fn", work]);
  return {
    ok: replay.code <= 1 && check.code === 0,
    replay: replay.code,
    check: check.code,
    output: `${replay.output}\n${check.output}`,
  };
}

/** Extracts a partition of a disk image file into a file of its own. */
export async function extractPartition(image: string, partition: Partition, path: string): Promise<void> {
  const source = await open(image, "r");
  const target = await open(path, "w");
  try {
    const buffer = Buffer.alloc(4 * 1024 * 1024);
    for (let done = 0; done < partition.bytes; ) {
      const n = Math.min(buffer.byteLength, partition.bytes - done);
      const { bytesRead } = await source.read(buffer, 0, n, partition.start + done);
      if (bytesRead !== n) throw new Error(`${image} ends inside partition`);
      await target.write(buffer, 0, n, done);
      done += n;
    }
  } finally {
    await source.close();
    await target.close();
  }
}

function run(command: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 99) : 0;
      resolve({ code, output: `$ ${command} ${args.join(" ")} → ${code}\n${stdout}${stderr}` });
    });
  });
}
