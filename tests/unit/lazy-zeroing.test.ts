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

  it("with v86's page check, clears the pages written and only reads the others", () => {
    const memory = new WebAssembly.Memory({ initial: 80 });
    const ram = 65536;
    const checked: number[] = [];
    const wrapped = withLazyZeroing({
      memory,
      allocate_memory: () => ram,
      zero_memory: () => {
        throw new Error("v86's own clear is not used once RAM is known");
      },
      main_loop: () => 0,
      // Guest addresses, as v86's pack_memory passes them.
      is_memory_zeroed: (addr: number, length: number) => {
        checked.push(addr);
        return new Uint8Array(memory.buffer, ram + addr, length).every((b) => b === 0);
      },
    }) as unknown as { allocate_memory(): number; main_loop(): void; zero_memory(addr: number, size: number): void };
    wrapped.allocate_memory();
    wrapped.main_loop();
    const bytes = new Uint8Array(memory.buffer, ram, 4 * LOW_MEMORY);
    bytes.fill(5, 4096 * 3 + 100, 4096 * 3 + 200);
    bytes[4 * LOW_MEMORY - 1] = 1;
    wrapped.zero_memory(0, bytes.length);
    expect(bytes.every((b) => b === 0)).toBe(true);
    expect(checked.length).toBe(bytes.length / 4096);
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

  it("on the real v86, a restore after the guest ran clears RAM the state has as zero and keeps the rest", async () => {
    const emulator = await loadedV86(withLazyZeroing);
    const mem8 = (emulator as unknown as { v86: { cpu: { mem8: Uint8Array } } }).v86.cpu.mem8;
    await emulator.run(); // the BIOS runs (no disk): RAM is no longer as allocated
    await new Promise((resolve) => setTimeout(resolve, 200));
    await emulator.stop();
    const saved = mem8.slice();
    const state = await emulator.save_state();
    // Written after the state was taken, on pages it has as zero and on one it holds.
    const marks = [8 * LOW_MEMORY + 5, 20 * LOW_MEMORY + 4095, DEFAULT_MEMORY - 1];
    for (const at of marks) {
      expect(saved[at]).toBe(0);
      mem8[at] = 0xa5;
    }
    const held = saved.findIndex((b) => b !== 0);
    mem8[held] = saved[held]! ^ 0xff;
    await emulator.restore_state(state);
    for (const at of marks) expect(mem8[at]).toBe(0);
    expect(mem8[held]).toBe(saved[held]);
    // (mem8 is of v86's realm: seen through a Buffer of this one)
    expect(Buffer.from(mem8.buffer, mem8.byteOffset, mem8.byteLength).equals(saved)).toBe(true);
    await emulator.destroy();
  }, 60_000);
});
