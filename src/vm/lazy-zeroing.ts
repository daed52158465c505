/**
 * A faster guest-RAM clear for v86 resumes.
 *
 * Before unpacking a saved state, v86 clears all guest RAM with its exported `zero_memory`. On a
 * freshly started emulator that writes every page of memory the OS has not even handed out yet:
 * 64 MiB of page faults, ~300 ms of a ~3 s resume on a small machine, to zero memory that is
 * already zero. Until the guest has run, the only RAM v86 has written is the first MiB (where it
 * copies the BIOS images; tests/unit/lazy-zeroing.test.ts checks that against the real v86), so
 * that first clear only needs to cover the first MiB. Any later clear (a rewind of a machine that
 * has run) is done in full, with a native memset rather than v86's loop, which runs once per
 * restore and so stays in the browser's baseline WebAssembly tier.
 */

/** RAM below this is where v86 puts the BIOS images before the guest starts. */
export const LOW_MEMORY = 1024 * 1024;

/** Wraps v86's WebAssembly exports; returns them unchanged if they do not look as expected. */
export function withLazyZeroing(exports: WebAssembly.Exports): WebAssembly.Exports {
  const { memory, allocate_memory: allocate, zero_memory: zero, main_loop: mainLoop } = exports;
  if (
    !(memory instanceof WebAssembly.Memory) ||
    typeof allocate !== "function" ||
    typeof zero !== "function" ||
    typeof mainLoop !== "function"
  ) {
    return exports;
  }
  /** RAM was allocated (fresh, all zero) and the guest has not run since. */
  let pristine = false;
  let ram = -1;
  return {
    ...exports,
    allocate_memory: (size: number) => {
      ram = (allocate as (size: number) => number)(size);
      pristine = true;
      return ram;
    },
    main_loop: (...args: unknown[]) => {
      pristine = false;
      return (mainLoop as (...a: unknown[]) => unknown)(...args);
    },
    zero_memory: (addr: number, size: number) => {
      if (pristine && addr === 0 && ram >= 0) {
        pristine = false;
        new Uint8Array(memory.buffer, ram, Math.min(size, LOW_MEMORY)).fill(0);
        return;
      }
      pristine = false;
      if (ram < 0) (zero as (addr: number, size: number) => void)(addr, size);
      else new Uint8Array(memory.buffer, ram + addr, size).fill(0);
    },
  };
}
