/**
 * `npm run publish-image` against a real S3-compatible server on 127.0.0.1: the command, run as a
 * separate process, is killed after some of its uploads; no manifest is in the bucket then (they go
 * last); run again, it sends only the rest; the bucket then holds exactly the local files (and the
 * server serves the image from it); a third run sends nothing.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { importImage } from "../../scripts/import-image.ts";
import { startS3TestServer, type S3TestServer } from "../../scripts/s3-test-server.ts";
import { newSnapshotId, referencedChunks, type DiskManifest } from "../../src/engine/repo-format.ts";
import { startServer } from "../../server/repo-server.ts";
import { openStore, type RepoStore } from "../../server/store.ts";

const CHUNKS = 240;
let dir: string;
let local: string;
let s3: S3TestServer;
let store: RepoStore;
let image: DiskManifest;
let snapshotId: string;
/** Called by the S3 server on each request it receives (the test kills the command from here). */
let onS3Request: (method: string, key: string) => void = () => undefined;

/** Runs the command in its own process; resolves with its output and how it ended. */
function publish(args: string[] = []): { done: Promise<{ code: number | null; signal: string | null; out: string }>; kill(): void } {
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/publish-image.ts", "--to", `s3://${s3.bucket}/pub`, "--repo", local, "--image", "big", ...args], {
    env: { ...process.env, ...s3.env() },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  return {
    done: new Promise((ok) => child.on("close", (code, signal) => ok({ code, signal, out }))),
    kill: () => child.kill("SIGKILL"),
  };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sandglass-publish-"));
  local = join(dir, "repo");
  // Random (incompressible) chunks, so each is a file of its own.
  await writeFile(join(dir, "disk.img"), randomBytes(CHUNKS * 65536));
  image = (await importImage({ image: join(dir, "disk.img"), repo: local, name: "big", bootDevice: "hda" })).manifest;
  // A booted snapshot of it, as scripts/publish-booted.ts makes: one new chunk for the state.
  const state = randomBytes(65536);
  const stateImport = await importImage({ image: await writeTemp("state.img", state), repo: join(dir, "scratch"), name: "state", bootDevice: "hda" });
  const stateRef = stateImport.manifest.chunks[0]!;
  await mkdir(join(local, "snapshots"), { recursive: true });
  await writeFile(join(local, "chunks", stateRef), await readFile(join(dir, "scratch", "chunks", stateRef)));
  snapshotId = newSnapshotId();
  const snapshot = { ...image, kind: "snapshot", name: snapshotId, sha256: undefined, parent: { kind: "image", name: "big" }, machine: { pieces: [stateRef], stateBytes: 65536, memoryBytes: 64 << 20 } };
  await writeFile(join(local, "snapshots", `${snapshotId}.json`), JSON.stringify(snapshot));
  await writeFile(join(local, "images", "big.json"), JSON.stringify({ ...image, booted: snapshotId }));
  await mkdir(join(local, "bios"), { recursive: true });
  await writeFile(join(local, "bios", "seabios.bin"), randomBytes(4096));
  s3 = await startS3TestServer({ onRequest: (method, key) => onS3Request(method, key) });
  store = openStore(`s3://${s3.bucket}/pub`, s3.env());
});

async function writeTemp(name: string, data: Buffer): Promise<string> {
  await writeFile(join(dir, name), data);
  return join(dir, name);
}

afterAll(async () => {
  await s3?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("publish-image", () => {
  it("is resumable: killed mid-way it left no manifest, and the rerun sends only the rest", async () => {
    const total = CHUNKS + 1;
    // Killed (SIGKILL, as a crash or Ctrl+\) when its 60th chunk upload reaches the server.
    let puts = 0;
    const first = publish(["--concurrency", "4"]);
    onS3Request = (method, key) => {
      if (method === "PUT" && key.startsWith("pub/chunks/") && ++puts === 60) first.kill();
    };
    const killed = await first.done;
    onS3Request = () => undefined;
    expect(killed.signal).toBe("SIGKILL");
    const after = (await store.list("chunks")).length;
    expect(after).toBeGreaterThanOrEqual(55);
    expect(after).toBeLessThan(total);
    expect(await store.list("images")).toEqual([]);
    expect(await store.list("snapshots")).toEqual([]);

    const second = await publish().done;
    expect(second.code, second.out).toBe(0);
    const m = /(\d+) chunks uploaded \(.*\), (\d+) already there/.exec(second.out)!;
    expect(Number(m[1]) + Number(m[2])).toBe(total);
    // The listing after the kill may count an upload the kill cut short (the test bucket lists a
    // key while its body is still arriving and drops it when the connection dies): at most the
    // four in flight are sent again.
    expect(Number(m[2])).toBeLessThanOrEqual(after);
    expect(Number(m[2])).toBeGreaterThanOrEqual(after - 4);
    expect(second.out).toContain(`snapshots/${snapshotId}.json`);
    expect(second.out).toContain("images/big.json");

    // The bucket holds exactly the local repository's files, byte for byte.
    const refs = new Set([...referencedChunks(image), ...JSON.parse(await readFile(join(local, "snapshots", `${snapshotId}.json`), "utf8")).machine.pieces]);
    expect(new Set((await store.list("chunks")).map((f) => f.name))).toEqual(refs);
    for (const ref of refs) expect((await store.readBytes(`chunks/${ref}`))!.equals(await readFile(join(local, "chunks", ref)))).toBe(true);
    for (const rel of ["images/big.json", `snapshots/${snapshotId}.json`, "bios/seabios.bin"]) {
      expect((await store.readBytes(rel))!.equals(await readFile(join(local, rel)))).toBe(true);
    }
    // Every chunk and manifest write asked for If-None-Match: * (never overwrite).
    const writes = s3.requests.filter((r) => r.method === "PUT" && (r.key.startsWith("pub/chunks/") || r.key.startsWith("pub/snapshots/")));
    expect(writes.length).toBeGreaterThan(0);
    expect(writes.every((r) => r.ifNoneMatch === "*")).toBe(true);

    // Nothing left to do.
    const third = await publish().done;
    expect(third.out).toMatch(/: 0 chunks uploaded \(0 B\), 241 already there; no other file written/);

    // A server on the bucket serves the image and its booted snapshot.
    const server = await startServer({ store });
    try {
      const res = await fetch(new URL("repo/images/big.json", server.url));
      expect(((await res.json()) as DiskManifest).booted).toBe(snapshotId);
      const chunk = await fetch(new URL(`repo/chunks/${image.chunks[7]}`, server.url));
      expect(Buffer.from(await chunk.arrayBuffer()).equals(await readFile(join(local, "chunks", image.chunks[7]!)))).toBe(true);
    } finally {
      await server.close();
    }
  });

  it("refuses a damaged local repository before writing any manifest", async () => {
    const ref = image.chunks[3]!;
    const good = await readFile(join(local, "chunks", ref));
    await store.remove(`chunks/${ref}`);
    await writeFile(join(local, "chunks", ref), Buffer.from("damaged"));
    try {
      const run = await publish().done;
      expect(run.code).toBe(1);
      expect(run.out).toMatch(/does not match its hash: the local repository is damaged/);
      expect(await store.exists(`chunks/${ref}`)).toBe(false);
    } finally {
      await writeFile(join(local, "chunks", ref), good);
    }
    expect(await readdir(join(local, "chunks"))).toContain(ref);
  });
});
