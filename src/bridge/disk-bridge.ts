/**
 * The one place the page talks to the disk worker: starts it, wraps it with Comlink, and ends it.
 * Components and the v86 adapter only see the typed `DiskApi`.
 */
import { proxy, transfer, wrap, type Remote } from "comlink";
import type { DiskService } from "../engine/disk-service.ts";
import type { TransferStats } from "../engine/chunk-source.ts";

export type DiskApi = Remote<DiskService>;

/** Marks bytes the page hands over for good (a machine state): moved to the worker, not copied. */
export function handOver(bytes: Uint8Array): Uint8Array {
  return transfer(bytes, [bytes.buffer]);
}

export class DiskBridge {
  readonly api: DiskApi;
  private readonly worker: Worker;

  constructor() {
    this.worker = new Worker(new URL("../../workers/disk.worker.ts", import.meta.url), { type: "module", name: "disk" });
    this.api = wrap<DiskService>(this.worker);
  }

  /**
   * Forwards the worker's transfer counters, background errors and timeline changes to page
   * callbacks. Calls reach the worker in order, so there is no need to wait for these.
   */
  listen(onProgress: (stats: TransferStats) => void, onError: (message: string) => void, onTimelineChange: () => void): void {
    void this.api.onProgress(proxy(onProgress));
    void this.api.onError(proxy(onError));
    void this.api.onTimelineChange(proxy(onTimelineChange));
  }

  /** Ends the worker (and releases its machine lock). */
  terminate(): void {
    this.worker.terminate();
  }
}
