/**
 * The real v86 in Node, shaped like the page's machine (machine-config.ts) with Debian's SeaBIOS,
 * for tests that check what Sandglass assumes about v86's internals. No disk, not started.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { V86 } from "v86";
import { DEFAULT_MEMORY } from "../../src/vm/machine-config.ts";
import { DEFAULT_VGA_MEMORY } from "../../src/engine/repo-format.ts";

const v86Build = join(dirname(createRequire(import.meta.url).resolve("v86")), "..", "build");

/**
 * Resolves once v86 has loaded. `exports` sees v86's WebAssembly exports and returns what v86 is
 * to use (the page wraps them, see lazy-zeroing.ts).
 */
export async function loadedV86(
  exports: (raw: WebAssembly.Exports) => WebAssembly.Exports = (raw) => raw,
  extra: { filesystem?: Record<string, never> } = {},
): Promise<V86> {
  const emulator = new V86({
    wasm_fn: async (imports) => {
      const module = await WebAssembly.compile(await readFile(join(v86Build, "v86.wasm")));
      return exports((await WebAssembly.instantiate(module, imports)).exports);
    },
    memory_size: DEFAULT_MEMORY,
    vga_memory_size: DEFAULT_VGA_MEMORY,
    bios: { buffer: (await readFile("/usr/share/seabios/bios.bin")).buffer },
    vga_bios: { buffer: (await readFile("/usr/share/seabios/vgabios.bin")).buffer },
    autostart: false,
    disable_speaker: true,
    ...extra,
  });
  await new Promise<void>((resolve) => emulator.add_listener("emulator-loaded", () => resolve()));
  return emulator;
}
