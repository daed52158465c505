/**
 * The emulated machine's shape. A saved state only restores into a machine of the same shape, so
 * the page and the build's booted snapshot (scripts/publish-booted.ts) both take it from here and
 * from the image's `hardware` (repo-format.ts).
 */
import { LEGACY_HARDWARE, type Hardware } from "../engine/repo-format.ts";

/** Guest RAM of machines whose image does not say (the small busybox image). */
export const DEFAULT_MEMORY = LEGACY_HARDWARE.memoryBytes;

/**
 * v86 options for a machine shape. `relay` picks the network backend: "fetch" (HTTP through the
 * browser's fetch) or a wisp:// / wisps:// relay URL for full TCP.
 */
/**
 * The BIOS boot order for a boot device (CMOS nibbles, lowest first: 1 floppy, 2 hard disk, 3 CD):
 * what v86 picks for a machine with that drive alone, and right when a second drive is beside it.
 */
const BOOT_ORDER: Record<Hardware["bootDevice"], number> = { cdrom: 0x123, hda: 0x312, fda: 0x321 };

export function v86Devices(hardware: Hardware, relay: string) {
  return {
    memory_size: hardware.memoryBytes,
    boot_order: BOOT_ORDER[hardware.bootDevice],
    vga_memory_size: hardware.vgaMemoryBytes,
    ...(hardware.network ? { net_device: { type: "virtio" as const, relay_url: relay } } : {}),
    // An empty in-memory 9p file system; its files are part of every saved state.
    ...(hardware.sharedFolder ? { filesystem: {} } : {}),
    // COM2, the guest agent's port (guest-agent.ts); in every saved state too.
    ...(hardware.serial1 ? { uart1: true } : {}),
  };
}
