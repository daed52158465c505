/**
 * The one place the page talks to the disk worker: starts it, wraps it with Comlink, and ends it.
 * Components and the v86 adapter only see the typed `DiskApi`.
 */
import { proxy, wrap, type Remote } from "comlink";
import type { DiskService } from "../engine/disk-service.ts";
import type { TransferStats } from "../engine/chunk-source.ts";

export type DiskApi = Remote<DiskService>;

export class DiskBridge {
  readonly api: DiskApi;
  private readonly worker: Worker;

  constructor() {
    this.worker = new Worker(new URL("../../workers/disk.worker.ts", import.meta.url), { type: "module", name: "disk" });
    this.api = wrap<DiskService>(this.worker);
  }

  /** Forwards the worker's transfer counters and background errors to page callbacks. */
  async listen(onProgress: (stats: TransferStats) => void, onError: (message: string) => void): Promise<void> {
    await this.api.onProgress(proxy(onProgress));
    await this.api.onError(proxy(onError));
  }

  /** Ends the worker (and releases its machine lock). */
  terminate(): void {
    this.worker.terminate();
  }
}
