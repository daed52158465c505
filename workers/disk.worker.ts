/// <reference lib="webworker" />
/**
 * The disk worker: owns IndexedDB and the network for disk data. It only exposes the engine's
 * DiskService to the page through Comlink; all logic lives in src/engine/.
 */
import { expose } from "comlink";
import { DiskService } from "../src/engine/disk-service.ts";

/** Holds a Web Lock for as long as this worker lives, so a second tab cannot open the same machine. */
function acquireLock(name: string): Promise<boolean> {
  return new Promise((resolve) => {
    void navigator.locks.request(name, { ifAvailable: true }, (lock) => {
      resolve(lock !== null);
      return lock ? new Promise<void>(() => undefined) : undefined;
    });
  });
}

expose(new DiskService({ fetch: (input, init) => fetch(input, init), acquireLock }));
