/**
 * src/vm/fast-resume.ts: v86 resumes at once through a message to its own thread, timed waits go
 * through v86's own path; and the real v86 has the two methods it replaces and keeps running.
 */
import { describe, expect, it } from "vitest";
import { resumeOnSameThread, type V86Scheduler } from "../../src/vm/fast-resume.ts";
import { loadedV86 } from "./real-v86.ts";

describe("same-thread resume", () => {
  it("resumes an immediate yield by message, later than the call, with its tick", async () => {
    const seen: number[] = [];
    const timed: [number, number][] = [];
    const scheduler: V86Scheduler = {
      yield: (t, tick) => void timed.push([t, tick]),
      yield_callback: (tick) => void seen.push(tick),
    };
    const restore = resumeOnSameThread(scheduler);
    scheduler.yield(0, 1);
    expect(seen).toEqual([]); // not re-entered from inside the slice that yielded
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual([1]);
    scheduler.yield(5, 2); // the guest waits 5 ms for a timer: v86's own timed path
    expect(timed).toEqual([[5, 2]]);
    restore();
    scheduler.yield(0, 3);
    expect(timed).toEqual([[5, 2], [0, 3]]);
  });

  it("fits the real v86: the emulator keeps running on it", async () => {
    const emulator = await loadedV86();
    const inner = (emulator as unknown as { v86: V86Scheduler }).v86;
    expect(typeof inner.yield).toBe("function");
    expect(typeof inner.yield_callback).toBe("function");
    let resumed = 0;
    let immediateViaV86 = 0;
    const callback = inner.yield_callback.bind(inner);
    inner.yield_callback = (tick) => {
      resumed++;
      callback(tick);
    };
    const own = inner.yield.bind(inner);
    inner.yield = (t, tick) => {
      if (t < 1) immediateViaV86++;
      own(t, tick);
    };
    const restore = resumeOnSameThread(inner);
    await emulator.run();
    const before = emulator.get_instruction_counter();
    await new Promise((r) => setTimeout(r, 300));
    await emulator.stop();
    expect(resumed).toBeGreaterThan(10); // SeaBIOS runs: many slices, each resumed by message
    expect(immediateViaV86).toBe(0);
    expect(emulator.get_instruction_counter()).toBeGreaterThan(before);
    restore();
    await emulator.destroy();
  }, 60_000);
});
