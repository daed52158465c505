/**
 * Starts v86 on the page with Sandglass's disk adapter and wires its serial port and screen.
 * Knows nothing of storage: the disk comes in as an adapter.
 */
import type { V86 } from "v86";
import v86WasmUrl from "v86/build/v86.wasm?url";
import type { V86DiskAdapter } from "./disk-adapter.ts";
import { DriveView } from "./drive-view.ts";
import { resumeOnSameThread, type V86Scheduler } from "./fast-resume.ts";
import { withLazyZeroing } from "./lazy-zeroing.ts";
import { restoreState } from "./restore-state.ts";
import type { Hardware } from "../engine/repo-format.ts";
import type { InputSettings } from "../engine/store-format.ts";
import { v86Devices } from "./machine-config.ts";
import { adaptNetwork } from "./network.ts";

/** What the emulator loads before it can start: its code, compiled WebAssembly and BIOS images. */
export interface EmulatorFiles {
  /** v86's JavaScript, loaded apart from the page's own so the page starts sooner. */
  V86: typeof V86;
  wasm: WebAssembly.Module;
  bios: ArrayBuffer;
  vgaBios: ArrayBuffer;
}

async function download(url: string, what: string): Promise<ArrayBuffer> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`Could not load the ${what} (HTTP ${response.status} for ${url}).`);
  return response.arrayBuffer();
}

/**
 * Fetches and compiles what the emulator needs. Call it first thing: it runs while the disk
 * worker opens the machine and fetches its state, instead of after.
 */
export async function preloadEmulator(biosUrl: string, vgaBiosUrl: string): Promise<EmulatorFiles> {
  const [{ V86 }, wasm, bios, vgaBios] = await Promise.all([
    import("v86"),
    WebAssembly.compileStreaming(fetch(v86WasmUrl)).catch((err: unknown) => {
      throw new Error(`Could not load the emulator (${String(err)}).`);
    }),
    download(biosUrl, "BIOS"),
    download(vgaBiosUrl, "VGA BIOS"),
  ]);
  return { V86, wasm, bios, vgaBios };
}

export interface MachineOptions {
  /** Element v86 draws the VGA screen into (a div holding a text div and a canvas). */
  screen: HTMLElement;
  disk: V86DiskAdapter;
  files: EmulatorFiles;
  /** RAM and devices: must match the machine's states (see repo-format.ts `hardware`). */
  hardware: Hardware;
  /** Network backend: "fetch" or a wisp:// relay URL (see network.ts). */
  relay: string;
  /** Whether keys and the mouse on the screen reach the guest (default: both). */
  input?: InputSettings;
  /**
   * A checkpoint to resume instead of booting (v86 save_state() output), which may still be on its
   * way: the emulator is made meanwhile and resumes it once both are ready. If it fails, the
   * emulator never starts (the caller reports why).
   */
  initialState?: Promise<ArrayBuffer>;
  /** Bytes the guest wrote to its first serial port, batched per animation frame. */
  onSerial: (bytes: Uint8Array) => void;
  /** The guest changed a file in the shared folder (a change to checkpoint). */
  onSharedWrite?: () => void;
}

/** What v86 calls on a drive before its init (and nowhere else): get_and_cache. */
interface Peekable {
  get_and_cache(start: number, len: number, fn: (data: Uint8Array) => void): void;
}

/**
 * v86's disk options: the one disk on its boot device, or each drive as a range of it. A machine
 * that resumes a state skips v86's read of each hard disk's first sector before init: v86 reads
 * it only to guess the disk's geometry, which the state then replaces (its IDE part holds the
 * geometry). On a first visit that read fetched a disk chunk the resume never uses, and in an
 * outage it failed before the state's own wait could say what was missing.
 */
function drives({ hardware, disk, initialState }: MachineOptions): Record<string, { buffer: ArrayBuffer }> {
  const attach = (d: Peekable) => {
    if (initialState) d.get_and_cache = (_start, len, fn) => fn(new Uint8Array(len));
    return d as unknown as { buffer: ArrayBuffer };
  };
  if (!hardware.drives) return { [hardware.bootDevice]: attach(disk) };
  return Object.fromEntries(hardware.drives.map((d) => [d.device, attach(new DriveView(disk, d.at, d.bytes))]));
}

export interface StartedMachine {
  emulator: V86;
  /**
   * Settles once the initial state is restored and the emulator runs (at once for a cold boot);
   * fails if the state never came or the emulator refused it (restore-state.ts StateRestoreError).
   */
  resumed: Promise<void>;
}

export function startMachine(options: MachineOptions): StartedMachine {
  const { files } = options;
  const emulator = new files.V86({
    wasm_fn: async (imports) => withLazyZeroing((await WebAssembly.instantiate(files.wasm, imports)).exports),
    ...v86Devices(options.hardware, options.relay),
    screen_container: options.screen,
    // v86 keeps these buffers; copies let a later machine on this page reuse the preloaded files.
    bios: { buffer: files.bios.slice(0) },
    vga_bios: { buffer: files.vgaBios.slice(0) },
    // v86 accepts any object with load/get/set as a disk (see v86 src/browser/starter.js).
    ...drives(options),
    autostart: !options.initialState,
    disable_speaker: true,
    ...(options.input?.keyboard === false ? { disable_keyboard: true } : {}),
    ...(options.input?.mouse === false ? { disable_mouse: true } : {}),
  });
  // What v86's own initial_state does (init, then restore, then run), with the state awaited in
  // between: making the emulator (instantiating, 256 MiB of RAM, devices) took ~160 ms of a first
  // visit that the state's download now hides.
  const state = options.initialState;
  const resumed = !state
    ? Promise.resolve()
    : new Promise<void>((done, failed) => {
        state.catch(failed); // a state that cannot be had is said at once, emulator made or not
        emulator.add_listener("emulator-loaded", () => {
          state
            .then((buffer) => restoreState(emulator, buffer))
            .then(() => emulator.run())
            .then(done, failed);
        });
      });
  // v86 makes its internal emulator once the WebAssembly is instantiated, before it first runs.
  emulator.add_listener("emulator-ready", () => {
    if (options.hardware.network) adaptNetwork(emulator, options.relay);
    const scheduler = (emulator as unknown as { v86?: V86Scheduler }).v86;
    if (typeof scheduler?.yield === "function" && typeof scheduler.yield_callback === "function") resumeOnSameThread(scheduler);
  });
  if (options.onSharedWrite) emulator.add_listener("9p-write-end", options.onSharedWrite);
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
  return { emulator, resumed };
}
