/// <reference lib="webworker" />
/**
 * The disk worker: owns IndexedDB and the network for disk data. It only exposes the engine's
 * DiskService to the page through Comlink; all logic lives in src/engine/.
 */
import { expose, transfer } from "comlink";
import { DiskService } from "../src/engine/disk-service.ts";

/** How long to wait for a lock: a reloading page's old worker may still hold it for a moment. */
const LOCK_WAIT_MS = 3000;

/** Holds a Web Lock for as long as this worker lives, so a second tab cannot open the same machine. */
function acquireLock(name: string): Promise<boolean> {
  return new Promise((resolve) => {
    navigator.locks
      .request(name, { signal: AbortSignal.timeout(LOCK_WAIT_MS) }, () => {
        resolve(true);
        return new Promise<void>(() => undefined);
      })
      .catch(() => resolve(false));
  });
}

/** Machine states are tens of MiB: they move to the page instead of being copied. */
class WorkerDiskService extends DiskService {
  override async restoreCheckpoint(id: string): ReturnType<DiskService["restoreCheckpoint"]> {
    const restored = await super.restoreCheckpoint(id);
    return transfer(restored, [restored.state.buffer]);
  }
}

expose(
  new WorkerDiskService({
    fetch: (input, init) => fetch(input, init),
    acquireLock,
    estimate: () => navigator.storage.estimate(),
  }),
);
