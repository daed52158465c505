/**
 * The resume shortcut in src/vm/lazy-zeroing.ts: its rule, and the fact about v86 it rests on
 * (before the guest runs, v86 has written guest RAM only below 1 MiB), checked on the real v86.
 */
import { describe, expect, it } from "vitest";
import { LOW_MEMORY, withLazyZeroing } from "../../src/vm/lazy-zeroing.ts";
import { DEFAULT_MEMORY } from "../../src/vm/machine-config.ts";
import { loadedV86 } from "./real-v86.ts";

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
    const emulator = await loadedV86((exports) => {
      raw = exports;
      wrapped = withLazyZeroing(raw);
      return wrapped;
    });
    expect(wrapped).not.toBe(raw);
    const mem8 = (emulator as unknown as { v86: { cpu: { mem8: Uint8Array } } }).v86.cpu.mem8;
    expect(mem8.byteLength).toBe(DEFAULT_MEMORY);
    expect(mem8.subarray(0, LOW_MEMORY).some((b) => b !== 0)).toBe(true); // the BIOS is there
    expect(mem8.subarray(LOW_MEMORY).every((b) => b === 0)).toBe(true);
    await emulator.destroy();
  }, 60_000);
});
