/**
 * Starts v86 on the page with Sandglass's disk adapter and wires its serial port and screen.
 * Knows nothing of storage: the disk comes in as an adapter.
 */
import { V86 } from "v86";
import v86WasmUrl from "v86/build/v86.wasm?url";
import type { V86DiskAdapter } from "./disk-adapter.ts";
import { DEFAULT_MEMORY, VGA_MEMORY } from "./machine-config.ts";

export interface MachineOptions {
  /** Element v86 draws the VGA screen into (a div holding a text div and a canvas). */
  screen: HTMLElement;
  disk: V86DiskAdapter;
  biosUrl: string;
  vgaBiosUrl: string;
  memoryBytes?: number;
  /** A checkpoint to resume instead of booting (v86 save_state() output). */
  initialState?: ArrayBuffer;
  /** Bytes the guest wrote to its first serial port, batched per animation frame. */
  onSerial: (bytes: Uint8Array) => void;
}

export { DEFAULT_MEMORY } from "./machine-config.ts";

export function startMachine(options: MachineOptions): V86 {
  const emulator = new V86({
    wasm_path: v86WasmUrl,
    memory_size: options.memoryBytes ?? DEFAULT_MEMORY,
    vga_memory_size: VGA_MEMORY,
    screen_container: options.screen,
    bios: { url: options.biosUrl },
    vga_bios: { url: options.vgaBiosUrl },
    // v86 accepts any object with load/get/set as a disk (see v86 src/browser/starter.js).
    hda: options.disk as unknown as { buffer: ArrayBuffer },
    autostart: true,
    disable_speaker: true,
    ...(options.initialState ? { initial_state: { buffer: options.initialState } } : {}),
  });
  let pending: number[] = [];
  let scheduled = false;
  emulator.add_listener("serial0-output-byte", (byte: number) => {
    pending.push(byte);
    if (scheduled) return;
    scheduled = true;
    // One terminal write per frame instead of one per byte keeps boot logs cheap.
    setTimeout(() => {
      scheduled = false;
      const bytes = Uint8Array.from(pending);
      pending = [];
      options.onSerial(bytes);
    }, 16);
  });
  return emulator;
}
