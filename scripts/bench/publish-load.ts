/**
 * Load test of publishing (issue 15), loopback only and bounded: CLIENTS concurrent publishers,
 * each publishing a snapshot of NEW_CHUNKS new 64 KiB chunks (SHARED of them the same for every
 * client, so server copies race on them) over a parent image, through two server copies of one
 * repository, with the real client code (src/engine/snapshot.ts uploadSnapshot) sending each
 * request to the next copy in turn, as a load balancer would. Run for the local folder and for a
 * bucket on the S3 test server (scripts/s3-test-server.ts), one after the other, in one run. Each
 * server copy and the S3 server are processes of their own; the clients share this one.
 *
 *   npm run bench:publish [-- --clients 50 --chunks 200 --shared 20]
 *
 * Afterwards every object is checked straight in the store: each snapshot manifest as sent, every
 * chunk present and hashing to its name, the chunk count exactly what was published, and exactly
 * one "stored" (201) answer per distinct chunk (no copy wrote a chunk another had written).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { importImage } from "../import-image.ts";
import { publishImages } from "../publish-image.ts";
import { FORMAT, FORMAT_VERSION, chunkHash, newSnapshotId, type ChunkRef, type DiskManifest } from "../../src/engine/repo-format.ts";
import { uploadSnapshot, type SnapshotFiles } from "../../src/engine/snapshot.ts";
import { startServer } from "../../server/repo-server.ts";
import { LocalStore, inParallel, openStore, type RepoStore } from "../../server/store.ts";

const CHUNK = 64 * 1024;

/** A snapshot over `parent` whose first chunks are `shared` then `count - shared.length` chunks of its own. */
export function syntheticSnapshot(parent: DiskManifest, count: number, shared: Map<ChunkRef, Uint8Array>): SnapshotFiles {
  const files = new Map<ChunkRef, Uint8Array>(shared);
  while (files.size < count) {
    const data = randomBytes(CHUNK);
    files.set(createHash("sha256").update(data).digest("hex"), data);
  }
  const refs = [...files.keys()];
  const chunks = [...parent.chunks];
  refs.slice(0, chunks.length).forEach((ref, i) => (chunks[i] = ref));
  const manifest: DiskManifest = {
    format: FORMAT,
    version: FORMAT_VERSION,
    kind: "snapshot",
    name: newSnapshotId(),
    description: "load test",
    created: new Date().toISOString(),
    size: parent.size,
    chunkSize: parent.chunkSize,
    chunks,
    storedBytes: count * CHUNK,
    parent: { kind: "image", name: parent.name },
    // The state pieces are the chunks the disk list cannot hold (all of them when it is short).
    machine: { pieces: refs.slice(Math.min(refs.length, chunks.length)), stateBytes: 0, memoryBytes: 64 << 20 },
  };
  return { manifest, files };
}

export function sharedChunks(n: number): Map<ChunkRef, Uint8Array> {
  const m = new Map<ChunkRef, Uint8Array>();
  for (let i = 0; i < n; i++) {
    const data = randomBytes(CHUNK);
    m.set(createHash("sha256").update(data).digest("hex"), data);
  }
  return m;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** A server copy in a process of its own (this file with --serve); resolves with its URL. */
async function serverProcess(spec: string, env: Record<string, string>): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/bench/publish-load.ts", "--serve", spec], {
    env: { ...process.env, ...env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise<string>((ok, fail) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening (\S+)/.exec(out);
      if (m) ok(m[1]!);
    });
    child.on("exit", (code) => fail(new Error(`server process exited (${code})`)));
  });
  return { url, child };
}

interface Outcome {
  backend: string;
  wallMs: number;
  publishes: number[];
  chunkPuts: number[];
  stored201: number;
  distinct: number;
  problems: string[];
  chunkFiles: number;
  expectedChunkFiles: number;
  /** Requests sent again after a network error (see fetchFn). */
  retried: number;
}

async function runBackend(backend: string, store: RepoStore, spec: string, env: Record<string, string>, parent: DiskManifest, opts: { clients: number; chunks: number; shared: number }): Promise<Outcome> {
  const copies = [await serverProcess(spec, env), await serverProcess(spec, env)];
  try {
    const shared = sharedChunks(opts.shared);
    const snapshots = Array.from({ length: opts.clients }, () => syntheticSnapshot(parent, opts.chunks, shared));
    const publishes: number[] = [];
    const chunkPuts: number[] = [];
    let stored201 = 0;
    let retried = 0;
    let turn = 0;
    // The load balancer: each request to the next copy.
    const fetchFn = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
      const url = new URL(String(input));
      const copy = new URL(copies[turn++ % copies.length]!.url);
      url.host = copy.host;
      const started = performance.now();
      let res: Response;
      for (let attempt = 0; ; attempt++) {
        try {
          res = await fetch(url, init);
          break;
        } catch (err) {
          // A kept-alive connection the server closed as the request went out (its idle timeout
          // on a loaded machine): sent again, as a browser does for these requests, and counted.
          if (attempt >= 2) throw err;
          retried++;
        }
      }
      if (init?.method === "PUT" && url.pathname.startsWith("/repo/chunks/")) {
        chunkPuts.push(performance.now() - started);
        if (res.status === 201) stored201++;
      }
      return res;
    };
    const repoUrl = new URL("repo/", copies[0]!.url).href;
    const started = performance.now();
    await Promise.all(
      snapshots.map(async (snapshot) => {
        const t = performance.now();
        await uploadSnapshot(repoUrl, snapshot, fetchFn);
        publishes.push(performance.now() - t);
      }),
    );
    const wallMs = performance.now() - started;

    // Checked in the store itself, not through the servers.
    const problems: string[] = [];
    for (const s of snapshots) {
      const text = await store.readText(`snapshots/${s.manifest.name}.json`);
      if (text !== JSON.stringify(s.manifest) + "\n") problems.push(`snapshot ${s.manifest.name} ${text === null ? "lost" : "differs"}`);
    }
    const distinct = new Map<ChunkRef, Uint8Array>();
    for (const s of snapshots) for (const [ref, data] of s.files) distinct.set(ref, data);
    await inParallel([...distinct.keys()], 32, async (ref) => {
      const data = await store.readBytes(`chunks/${ref}`);
      if (!data) problems.push(`chunk ${ref.slice(0, 12)} lost`);
      else if (createHash("sha256").update(data).digest("hex") !== chunkHash(ref)) problems.push(`chunk ${ref.slice(0, 12)} corrupted`);
    });
    const chunkFiles = (await store.list("chunks")).length;
    const parentChunks = new Set(parent.chunks.filter((c) => c !== null)).size;
    if (stored201 !== distinct.size) problems.push(`${stored201} chunks answered "stored" for ${distinct.size} distinct ones`);
    return { backend, wallMs, publishes, chunkPuts, stored201, distinct: distinct.size, problems, chunkFiles, expectedChunkFiles: parentChunks + distinct.size, retried };
  } finally {
    for (const c of copies) c.child.kill();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      clients: { type: "string", default: "50" },
      chunks: { type: "string", default: "200" },
      shared: { type: "string", default: "20" },
      serve: { type: "string" },
    },
  });
  if (values.serve) {
    const server = await startServer({ store: openStore(values.serve), uploads: true, uploadToken: "" });
    console.log(`listening ${server.url}`);
    return;
  }
  const opts = { clients: Number(values.clients), chunks: Number(values.chunks), shared: Number(values.shared) };
  const dir = await mkdtemp(join(tmpdir(), "sandglass-load-"));
  // The S3 server gets a process of its own too (its command line: scripts/s3-test-server.ts).
  const s3child = spawn(process.execPath, ["--import", "tsx", "scripts/s3-test-server.ts", "--port", "0", "--dir", join(dir, "s3")], { stdio: ["ignore", "pipe", "inherit"] });
  const endpoint = await new Promise<string>((ok) => {
    let out = "";
    s3child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /S3 test server at (\S+),/.exec(out);
      if (m) ok(m[1]!);
    });
  });
  const s3env = { SANDGLASS_S3_ENDPOINT: endpoint, AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER", AWS_REGION: "us-east-1" };
  try {
    // The parent: a 10 MiB image of 160 distinct chunks (the small image has 169).
    const raw = randomBytes(160 * CHUNK);
    await writeFile(join(dir, "parent.img"), raw);
    const parent = (await importImage({ image: join(dir, "parent.img"), repo: join(dir, "local"), name: "parent", bootDevice: "hda" })).manifest;
    const bucket = openStore("s3://sandglass/repo", s3env);
    await publishImages({ from: join(dir, "local"), to: bucket, images: ["parent"] });

    const mib = ((opts.clients * (opts.chunks - opts.shared) + opts.shared) * CHUNK) / 2 ** 20;
    console.log(`\n${opts.clients} clients × a snapshot of ${opts.chunks} new 64 KiB chunks (${opts.shared} the same in all), two server copies, requests alternating\n`);
    console.log("| Store | Wall time | Chunks stored / s | MiB/s | Publish p50 / p99 | Chunk PUT p50 / p99 | Lost or corrupted | Chunks in store (expected) | Requests retried |");
    console.log("|---|---|---|---|---|---|---|---|---|");
    const outcomes: Outcome[] = [];
    for (const [name, store, spec, env] of [
      ["local folder", new LocalStore(join(dir, "local")), join(dir, "local"), {}],
      ["S3 (s3rver on loopback)", bucket, "s3://sandglass/repo", s3env],
    ] as const) {
      const o = await runBackend(name, store, spec, env, parent, opts);
      outcomes.push(o);
      const p = [...o.publishes].sort((a, b) => a - b);
      const c = [...o.chunkPuts].sort((a, b) => a - b);
      console.log(
        `| ${o.backend} | ${(o.wallMs / 1000).toFixed(1)} s | ${(o.distinct / (o.wallMs / 1000)).toFixed(0)} | ${(mib / (o.wallMs / 1000)).toFixed(1)} | ` +
          `${(percentile(p, 50) / 1000).toFixed(1)} s / ${(percentile(p, 99) / 1000).toFixed(1)} s | ${percentile(c, 50).toFixed(0)} ms / ${percentile(c, 99).toFixed(0)} ms | ` +
          `${o.problems.length === 0 ? "0" : o.problems.slice(0, 5).join("; ")} | ${o.chunkFiles} (${o.expectedChunkFiles}) | ${o.retried} |`,
      );
    }
    if (outcomes.some((o) => o.problems.length > 0 || o.chunkFiles !== o.expectedChunkFiles)) process.exitCode = 1;
  } finally {
    s3child.kill();
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
