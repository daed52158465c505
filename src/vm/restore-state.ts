/**
 * Restoring a saved state into a running v86 without moving the guest's clock.
 *
 * v86's set_tsc(value), which restore_state calls with the saved time stamp counter, computes its
 * new offset from the counter as read through the old offset, so the counter it leaves is the
 * saved value plus the offset it had before. Each restore thus moved the guest's TSC by the
 * previous restore's error: forward or back by as much as the guest had run (hours, measured on
 * the crash suite's machine). A guest whose clock source goes back sleeps until it catches up:
 * busybox's shell, which waits 20 ms after Enter when the terminal's answer to its cursor query is
 * late, hung for minutes after a rewind; a clock jumping forward makes the kernel's watchdogs see
 * a stuck CPU. Setting the counter to its own current value first leaves the offset at zero, and
 * the restore then sets exactly the saved value.
 */

/** The parts of v86's CPU (its WebAssembly exports and a view of its memory) this needs. */
interface TscCpu {
  store_current_tsc(): void;
  /** [low, high] 32-bit halves, written by store_current_tsc (a view of v86's memory). */
  current_tsc: ArrayLike<number>;
  set_tsc(low: number, high: number): void;
}

interface RestorableV86 {
  restore_state(state: ArrayBuffer): Promise<void>;
}

function cpuOf(emulator: RestorableV86): TscCpu | undefined {
  const cpu = (emulator as unknown as { v86?: { cpu?: Partial<TscCpu> } }).v86?.cpu;
  if (typeof cpu?.store_current_tsc !== "function" || typeof cpu.set_tsc !== "function" || typeof cpu.current_tsc?.[0] !== "number") return undefined;
  return cpu as TscCpu;
}

/** The guest's time stamp counter now (v86 counts 1,000,000 per millisecond of the page's clock). */
export function guestTsc(emulator: RestorableV86): number | undefined {
  const cpu = cpuOf(emulator);
  if (!cpu) return undefined;
  cpu.store_current_tsc();
  return cpu.current_tsc[1]! * 2 ** 32 + cpu.current_tsc[0]!;
}

/**
 * A machine state the emulator refused: one saved by another version of v86 (its state format
 * changed), or damaged before it was hashed. v86 checks the header before it changes anything.
 */
export class StateRestoreError extends Error {
  constructor(cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(
      `This machine state cannot be restored by this version of the emulator (${why}). Nothing was changed or deleted.`,
      { cause },
    );
    this.name = "StateRestoreError";
  }
}

/** restore_state, with the guest's TSC exactly the saved one (see the top). */
export async function restoreState(emulator: RestorableV86, state: ArrayBuffer): Promise<void> {
  const cpu = cpuOf(emulator);
  if (cpu) {
    cpu.store_current_tsc();
    cpu.set_tsc(cpu.current_tsc[0]!, cpu.current_tsc[1]!);
  }
  try {
    await emulator.restore_state(state);
  } catch (err) {
    throw new StateRestoreError(err);
  }
}
