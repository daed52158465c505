/**
 * Publishes a "booted and idle" snapshot of an image into a repository, and names it in the
 * image's manifest (`booted`), so opening the site resumes a ready shell instead of booting.
 *
 *   tsx scripts/publish-booted.ts --repo build/repo --name default --guest build/guest [--warm "commands"]
 *
 * Boots the image in v86 under Node through the same disk adapter the page uses (an in-memory
 * backend stands in for the disk worker), waits for the shell, drops the guest's caches (with
 * init_on_free=1 freed pages are zero, and v86 leaves zero pages out of its state), and saves the
 * state. Skipped when the image and this script are unchanged since the last run.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { V86 } from "v86";
import {
  FORMAT,
  FORMAT_VERSION,
  carriedMetadataChunks,
  chunkHash,
  chunkLength,
  chunkPath,
  hardwareOf,
  manifestPath,
  parseManifest,
  type ChunkRef,
  type DiskManifest,
} from "../src/engine/repo-format.ts";
import { groupState, storeForm } from "../src/engine/snapshot.ts";
import { V86DiskAdapter } from "../src/vm/disk-adapter.ts";
import { v86Devices } from "../src/vm/machine-config.ts";
import { readImage } from "./read-image.ts";

const PROMPT = "root@sandglass:~# ";
const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";

const { values } = parseArgs({
  options: {
    repo: { type: "string", default: "build/repo" },
    name: { type: "string", default: "default" },
    guest: { type: "string", default: "build/guest" },
    /**
     * Commands run after the caches are dropped, so the files they read are in the saved page
     * cache: a first visit then reads them from the state (fetched in parallel, compressed)
     * instead of one disk chunk at a time.
     */
    warm: { type: "string", default: "" },
  },
});
const repo = values.repo;
const guest = values.guest;
const imagePath = join(repo, manifestPath("image", values.name));

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function writeAtomic(path: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  // Named per process: prepare-guest.sh publishes the two images' snapshots at once, and they may share chunks.
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

const image = parseManifest(JSON.parse(await readFile(imagePath, "utf8")));
const hardware = hardwareOf(image);
const v86Dir = join(dirname(createRequire(import.meta.url).resolve("v86")), "..", "build");
const stamp = createHash("sha256")
  .update(image.sha256 ?? "")
  .update(await readFile(new URL(import.meta.url)))
  .update(values.warm)
  // How the state is cut into pieces (a change re-publishes).
  .update(await readFile(new URL("../src/engine/snapshot.ts", import.meta.url)))
  .update(await readFile(new URL("../src/engine/repo-format.ts", import.meta.url)))
  // What the state holds of the disk and the machine's shape.
  .update(await readFile(new URL("../src/vm/disk-adapter.ts", import.meta.url)))
  .update(await readFile(new URL("../src/vm/machine-config.ts", import.meta.url)))
  .update(await readFile(join(v86Dir, "v86.wasm")))
  .digest("hex");
const stampPath = join(guest, ".booted-stamp");
if (
  image.booted &&
  (await exists(join(repo, manifestPath("snapshot", image.booted)))) &&
  (await readFile(stampPath, "utf8").catch(() => "")) === stamp
) {
  console.log(`booted snapshot of "${image.name}" up to date (${image.booted})`);
  process.exit(0);
}

const started = performance.now();
const disk = await readImage(join(guest, "disk.img"));
const changed = new Set<number>();
const adapter = new V86DiskAdapter(
  {
    read: async (offset, length) => disk.slice(offset, offset + length),
    write: async (offset, data) => {
      disk.set(data, offset);
      for (let c = Math.floor(offset / image.chunkSize); c * image.chunkSize < offset + data.byteLength; c++) changed.add(c);
    },
  },
  { size: image.size, chunkSize: image.chunkSize, onError: (err) => fail(String(err)) },
);

function fail(message: string): never {
  console.error(`publish-booted: ${message}`);
  process.exit(1);
}

const emulator = new V86({
  wasm_path: join(v86Dir, "v86.wasm"),
  // The image's machine; the network's backend is not part of the state (the page picks its own).
  ...v86Devices(hardware, "fetch"),
  bios: { buffer: (await readFile(join(guest, "seabios.bin"))).buffer },
  vga_bios: { buffer: (await readFile(join(guest, "vgabios.bin"))).buffer },
  hda: adapter as unknown as { buffer: ArrayBuffer },
  autostart: true,
  disable_speaker: true,
});
let output = "";
const waitFor = (text: string, timeoutMs: number) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(
      () => fail(`no "${text.trim()}" from the guest after ${timeoutMs / 1000} s; it printed:\n${output.slice(-800)}`),
      timeoutMs,
    );
    const check = setInterval(() => {
      if (output.includes(text)) {
        clearInterval(check);
        clearTimeout(timer);
        resolve();
      }
    }, 50);
  });
emulator.add_listener("serial0-output-byte", (byte: number) => (output += String.fromCharCode(byte)));
await waitFor(PROMPT, 180_000);
if (hardware.serial1) {
  // The image runs the guest agent on COM2 (src/vm/guest-agent.ts): a snapshot whose agent does
  // not answer would only fail later, in a person's restore.
  let agent = "";
  emulator.add_listener("serial1-output-byte", (byte: number) => (agent += String.fromCharCode(byte)));
  const asked = Date.now();
  while (!agent.includes("SGA1 1 ok agent")) {
    if (Date.now() - asked > 60_000) fail(`the guest agent did not answer on COM2 (it said ${JSON.stringify(agent.slice(-200))})`);
    emulator.serial_send_bytes(1, new TextEncoder().encode("SGA1 1 ping\n"));
    await new Promise((r) => setTimeout(r, 1000));
  }
}
// Settle: write back everything, then free the page cache (zeroed by init_on_free=1).
const warm = values.warm ? `(${values.warm}) >/dev/null 2>&1; ` : "";
emulator.serial0_send(`clear; sync; echo 3 > /proc/sys/vm/drop_caches; ${warm}clear; echo booted-$((20+1))\n`);
await waitFor("booted-21", 300_000);
await new Promise((r) => setTimeout(r, 2000));
output = "";
const state = new Uint8Array(await emulator.save_state());
await emulator.destroy();

const files = new Map<ChunkRef, Uint8Array>();
const chunks = [...image.chunks];
for (const index of changed) {
  const data = disk.subarray(index * image.chunkSize, index * image.chunkSize + chunkLength(image, index));
  if (data.every((b) => b === 0)) {
    chunks[index] = null;
    continue;
  }
  const { ref, stored } = await storeForm(data);
  if (chunks[index] && chunkHash(chunks[index]) === chunkHash(ref)) continue;
  chunks[index] = ref;
  files.set(ref, stored);
}
const pieces: ChunkRef[] = [];
for (const group of await groupState(state)) {
  const { ref, stored } = await storeForm(group);
  pieces.push(ref);
  files.set(ref, stored);
}
// A stable id for the same inputs (repeat builds publish the same snapshot).
const digest = createHash("sha256").update(stamp).update(state).digest();
const id = Array.from(digest.subarray(0, 26), (b) => BASE32[b & 31]).join("");
const snapshot: DiskManifest = {
  format: FORMAT,
  version: FORMAT_VERSION,
  kind: "snapshot",
  name: id,
  description: `${image.description} (booted, idle)`,
  created: new Date().toISOString(),
  size: image.size,
  chunkSize: image.chunkSize,
  chunks,
  storedBytes: [...files.values()].reduce((n, f) => n + f.byteLength, 0),
  parent: { kind: "image", name: image.name },
  hardware,
  ...carriedMetadataChunks(image, chunks),
  machine: { pieces, stateBytes: state.byteLength, memoryBytes: hardware.memoryBytes },
};
for (const [ref, stored] of files) {
  const path = join(repo, chunkPath(ref));
  if (!(await exists(path))) await writeAtomic(path, stored);
}
await writeAtomic(join(repo, manifestPath("snapshot", id)), JSON.stringify(snapshot) + "\n");
// The raw state too, for the benchmark's plain-v86 baseline (initial_state over HTTP).
await writeAtomic(join(repo, "raw", `${image.name}-booted.state`), state);
await writeAtomic(imagePath, JSON.stringify({ ...image, booted: id }) + "\n");
await writeFile(stampPath, stamp);
const mib = (n: number) => (n / 2 ** 20).toFixed(1);
console.log(
  `booted snapshot ${id}: state ${mib(state.byteLength)} MiB, ${changed.size} disk chunks written by boot, ` +
    `${mib(snapshot.storedBytes)} MiB stored, in ${((performance.now() - started) / 1000).toFixed(1)} s`,
);
process.exit(0);
