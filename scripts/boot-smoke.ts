/**
 * Boots a guest image in v86 under Node (no browser, no Sandglass) and checks the shell answers:
 * a quick way to test scripts/build-image.sh on its own.
 *   tsx scripts/boot-smoke.ts [build/guest/disk.img]
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { V86 } from "v86";

const image = process.argv[2] ?? "build/guest/disk.img";
const dir = dirname(image);
const v86Dir = join(dirname(createRequire(import.meta.url).resolve("v86")), "..", "build");
const buffer = (await readFile(image)).buffer;
const started = performance.now();
const emulator = new V86({
  wasm_path: join(v86Dir, "v86.wasm"),
  memory_size: 64 * 1024 * 1024,
  bios: { buffer: (await readFile(join(dir, "seabios.bin"))).buffer },
  vga_bios: { buffer: (await readFile(join(dir, "vgabios.bin"))).buffer },
  hda: { buffer },
  autostart: true,
});
let text = "";
let sent = false;
const timer = setTimeout(() => {
  console.error(`\nboot-smoke: no answer after 120 s`);
  process.exit(1);
}, 120_000);
emulator.add_listener("serial0-output-byte", (byte: number) => {
  const c = String.fromCharCode(byte);
  text += c;
  process.stdout.write(c);
  if (!sent && text.includes("root@sandglass:~# ")) {
    sent = true;
    emulator.serial0_send("echo smoke-$((6*7))\n");
  }
  if (text.includes("smoke-42\r\n") || text.includes("smoke-42\n")) {
    clearTimeout(timer);
    console.log(`\nboot-smoke: shell answered after ${((performance.now() - started) / 1000).toFixed(1)} s`);
    void emulator.destroy();
    process.exit(0);
  }
});
