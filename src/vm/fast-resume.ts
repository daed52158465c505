/**
 * Resumes v86 between slices of guest execution without a round trip to another thread.
 *
 * v86 runs the guest in slices of about a millisecond and hands the page back between them. When
 * it wants to go on at once (the guest is busy), it still asks its timer worker to post a message
 * back, so every slice waits for a second thread to be scheduled. On a loaded two-core machine
 * (the emulator on one core, V8 compiling the guest's code on the other) that wait measured
 * 0.2–1 ms per slice: 50–320 ms of a 400–800 ms guest read of 64 MiB, in v86's own page too. A
 * MessageChannel message to the page itself comes back on the same thread and, unlike
 * setTimeout(0), is never clamped to 4 ms; the page's input, rendering and worker replies are
 * queued tasks as before. Timed waits (the guest halted until its next timer) still go through
 * v86's worker, which keeps time in a background tab.
 */

/** The part of v86's internal emulator object (`V86#v86`, src/main.js) this touches. */
export interface V86Scheduler {
  yield(t: number, tick: number): void;
  yield_callback(tick: number): void;
}

/**
 * Installs the same-thread resume on v86's emulator object; the returned function puts v86's own
 * back. (The page never needs it: a machine lives as long as its page.)
 */
export function resumeOnSameThread(scheduler: V86Scheduler): () => void {
  const viaWorker = scheduler.yield.bind(scheduler);
  const channel = new MessageChannel();
  channel.port1.onmessage = (event: MessageEvent<number>) => scheduler.yield_callback(event.data);
  scheduler.yield = (t, tick) => {
    if (t < 1) channel.port2.postMessage(tick);
    else viaWorker(t, tick);
  };
  return () => {
    scheduler.yield = viaWorker;
    channel.port1.close();
  };
}
