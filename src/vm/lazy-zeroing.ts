/**
 * A faster guest-RAM clear for v86 resumes.
 *
 * Before unpacking a saved state, v86 clears all guest RAM with its exported `zero_memory`. On a
 * freshly started emulator that writes every page of memory the OS has not even handed out yet:
 * 64 MiB of page faults, ~300 ms of a ~3 s resume on a small machine, to zero memory that is
 * already zero. Until the guest has run, the only RAM v86 has written is the first MiB (where it
 * copies the BIOS images; tests/unit/lazy-zeroing.test.ts checks that against the real v86), so
 * that first clear only needs to cover the first MiB. Any later clear (a rewind of a machine that
 * has run) covers all of RAM, but writes only the pages that are not zero (see clearWritten), with
 * a native memset rather than v86's loop, which runs once per restore and so stays in the
 * browser's baseline WebAssembly tier.
 */

/** RAM below this is where v86 puts the BIOS images before the guest starts. */
export const LOW_MEMORY = 1024 * 1024;

const PAGE = 4096;

/** v86's `is_memory_zeroed(guest address, length)`, what its own pack_memory checks pages with. */
type ZeroCheck = (addr: number, length: number) => number | boolean;

/**
 * Clears `bytes` (guest RAM from guest address `addr`) page by page, writing only pages that are
 * not zero already. Reading a page the guest never touched maps the system's shared zero page;
 * writing it would make the system allocate and clear a page first. The first rewind of a 256 MiB
 * Debian machine spent 220 ms in such faults, against 40 ms for a clear of memory already mapped.
 */
function clearWritten(bytes: Uint8Array, addr: number, isZeroed: ZeroCheck): void {
  for (let at = 0; at < bytes.length; at += PAGE) {
    if (!isZeroed(addr + at, PAGE)) bytes.fill(0, at, at + PAGE);
  }
}

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
  const isZeroed = typeof exports.is_memory_zeroed === "function" ? (exports.is_memory_zeroed as ZeroCheck) : undefined;
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
      else if (isZeroed && addr % PAGE === 0 && size % PAGE === 0) clearWritten(new Uint8Array(memory.buffer, ram + addr, size), addr, isZeroed);
      else new Uint8Array(memory.buffer, ram + addr, size).fill(0);
    },
  };
}
