/**
 * Boots a guest image in v86 under Node (no browser, no Sandglass) and checks the shell answers:
 * a quick way to test scripts/build-image.sh or build-debian.sh on its own.
 *   tsx scripts/boot-smoke.ts [build/guest/disk.img] [--memory MiB] [--vga-memory MiB] [--network] [--shared-folder]
 *       [--run "command"]   (a command to run once the shell answers; its output is printed)
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { V86 } from "v86";
import { v86Devices } from "../src/vm/machine-config.ts";
import { readImage } from "./read-image.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    memory: { type: "string", default: "64" },
    "vga-memory": { type: "string", default: "8" },
    network: { type: "boolean", default: false },
    "shared-folder": { type: "boolean", default: false },
    run: { type: "string" },
  },
});
const image = positionals[0] ?? "build/guest/disk.img";
const dir = dirname(image);
const v86Dir = join(dirname(createRequire(import.meta.url).resolve("v86")), "..", "build");
const buffer = (await readImage(image)).buffer;
const started = performance.now();
const memoryBytes = Number(values.memory) * 2 ** 20;
const emulator = new V86({
  wasm_path: join(v86Dir, "v86.wasm"),
  ...v86Devices(
    {
      memoryBytes,
      network: values.network,
      sharedFolder: values["shared-folder"],
      vgaMemoryBytes: Number(values["vga-memory"]) * 2 ** 20,
      bootDevice: "hda",
    },
    "fetch",
  ),
  bios: { buffer: (await readFile(join(dir, "seabios.bin"))).buffer },
  vga_bios: { buffer: (await readFile(join(dir, "vgabios.bin"))).buffer },
  hda: { buffer },
  autostart: true,
});
let text = "";
let sent = false;
const timer = setTimeout(() => {
  console.error(`\nboot-smoke: no answer in time`);
  process.exit(1);
}, Number(process.env.SMOKE_TIMEOUT_MS ?? 180_000));
const command = values.run ? `${values.run}; ` : "";
emulator.add_listener("serial0-output-byte", (byte: number) => {
  const c = String.fromCharCode(byte);
  text += c;
  process.stdout.write(c);
  if (!sent && text.includes("root@sandglass:~# ")) {
    sent = true;
    console.log(`\nboot-smoke: prompt after ${((performance.now() - started) / 1000).toFixed(1)} s`);
    emulator.serial0_send(`${command}echo smoke-$((6*7))\n`);
  }
  if (text.includes("smoke-42\r\n") || text.includes("smoke-42\n")) {
    clearTimeout(timer);
    console.log(`\nboot-smoke: shell answered after ${((performance.now() - started) / 1000).toFixed(1)} s`);
    void emulator.destroy();
    process.exit(0);
  }
});
