/**
 * The resume shortcut in src/vm/lazy-zeroing.ts: its rule, and the fact about v86 it rests on
 * (before the guest runs, v86 has written guest RAM only below 1 MiB), checked on the real v86.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { V86 } from "v86";
import { describe, expect, it } from "vitest";
import { LOW_MEMORY, withLazyZeroing } from "../../src/vm/lazy-zeroing.ts";
import { DEFAULT_MEMORY, VGA_MEMORY } from "../../src/vm/machine-config.ts";

const v86Build = join(dirname(createRequire(import.meta.url).resolve("v86")), "..", "build");

/** Exports shaped like v86's, over a real WebAssembly memory, recording calls to the real clear. */
function fakeExports() {
  const memory = new WebAssembly.Memory({ initial: 80 }); // 5 MiB
  const calls: [number, number][] = [];
  const exports = {
    memory,
    allocate_memory: () => 65536,
    zero_memory: (addr: number, size: number) => void calls.push([addr, size]),
    main_loop: () => 0,
  };
  return { memory, calls, wrapped: withLazyZeroing(exports) as unknown as typeof exports };
}

describe("lazy zeroing", () => {
  it("clears only the low MiB before the guest first runs, everything afterwards", () => {
    const { memory, wrapped } = fakeExports();
    const ram = wrapped.allocate_memory();
    const bytes = new Uint8Array(memory.buffer, ram, 4 * LOW_MEMORY);
    bytes.fill(7, 0, 16); // the BIOS, copied in by v86's init
    wrapped.zero_memory(0, bytes.length);
    expect(bytes.subarray(0, 16).every((b) => b === 0)).toBe(true);

    bytes.fill(9, 2 * LOW_MEMORY, 2 * LOW_MEMORY + 16); // the guest ran and wrote above 1 MiB
    wrapped.main_loop();
    wrapped.zero_memory(0, bytes.length);
    expect(bytes.every((b) => b === 0)).toBe(true);
  });

  it("clears in full when the guest has run since memory was allocated", () => {
    const { memory, wrapped } = fakeExports();
    const ram = wrapped.allocate_memory();
    wrapped.main_loop();
    const bytes = new Uint8Array(memory.buffer, ram, 4 * LOW_MEMORY);
    bytes.fill(9, 3 * LOW_MEMORY, 3 * LOW_MEMORY + 16);
    wrapped.zero_memory(0, bytes.length);
    expect(bytes.every((b) => b === 0)).toBe(true);
  });

  it("leaves exports it does not recognise alone", () => {
    const exports = { memory: new WebAssembly.Memory({ initial: 1 }), zero_memory: () => undefined };
    expect(withLazyZeroing(exports)).toBe(exports);
  });

  it("matches the real v86: wrapped, and no RAM above 1 MiB written before the guest runs", async () => {
    let wrapped: WebAssembly.Exports | undefined;
    let raw: WebAssembly.Exports | undefined;
    const emulator = new V86({
      wasm_fn: async (imports) => {
        const module = await WebAssembly.compile(await readFile(join(v86Build, "v86.wasm")));
        raw = (await WebAssembly.instantiate(module, imports)).exports;
        wrapped = withLazyZeroing(raw);
        return wrapped;
      },
      memory_size: DEFAULT_MEMORY,
      vga_memory_size: VGA_MEMORY,
      bios: { buffer: (await readFile("/usr/share/seabios/bios.bin")).buffer },
      vga_bios: { buffer: (await readFile("/usr/share/seabios/vgabios.bin")).buffer },
      autostart: false,
      disable_speaker: true,
    });
    await new Promise<void>((resolve) => emulator.add_listener("emulator-loaded", () => resolve()));
    expect(wrapped).not.toBe(raw);
    const mem8 = (emulator as unknown as { v86: { cpu: { mem8: Uint8Array } } }).v86.cpu.mem8;
    expect(mem8.byteLength).toBe(DEFAULT_MEMORY);
    expect(mem8.subarray(0, LOW_MEMORY).some((b) => b !== 0)).toBe(true); // the BIOS is there
    expect(mem8.subarray(LOW_MEMORY).every((b) => b === 0)).toBe(true);
    await emulator.destroy();
  }, 60_000);
});
