/**
 * One drive of a machine whose disk holds several (repo-format.ts `hardware.drives`, e.g. a CD
 * and an empty hard disk to install onto): v86's disk "buffer" contract over a range of the
 * machine's one disk adapter. Only offsets are translated, so every drive's writes land in the
 * one write log and a rewind moves them all together.
 */
import type { V86DiskAdapter } from "./disk-adapter.ts";

export class DriveView {
  onload: ((e: object) => void) | undefined;
  onprogress: ((e: object) => void) | undefined;

  constructor(
    private readonly disk: V86DiskAdapter,
    private readonly at: number,
    readonly byteLength: number,
  ) {}

  load(): void {
    this.onload?.({});
  }

  get(start: number, len: number, fn: (data: Uint8Array) => void): void {
    this.disk.get(this.at + start, len, fn);
  }

  get_and_cache(start: number, len: number, fn: (data: Uint8Array) => void): void {
    this.disk.get(this.at + start, len, fn);
  }

  get_from_cache(start: number, len: number): Uint8Array | undefined {
    return this.disk.get_from_cache(this.at + start, len);
  }

  set(start: number, data: Uint8Array, fn: () => void): void {
    this.disk.set(this.at + start, data, fn);
  }

  get_buffer(fn: (buffer?: ArrayBuffer) => void): void {
    fn(undefined);
  }

  /** As the whole disk's adapter: the data is the disk worker's, not the state's. */
  get_state(): unknown[] {
    return this.disk.get_state();
  }

  set_state(_state: unknown[]): void {}
}
