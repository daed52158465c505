/**
 * The emulated machine's shape. A saved state only restores into a machine of the same shape, so
 * the page and the build's booted snapshot (scripts/publish-booted.ts) both take it from here.
 */

/** Guest RAM: enough for a busybox system; smaller RAM means smaller checkpoints. */
export const DEFAULT_MEMORY = 64 * 1024 * 1024;
export const VGA_MEMORY = 8 * 1024 * 1024;
