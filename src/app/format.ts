/** How the page words things for people: byte counts, errors. */

/** Human-readable byte counts for the status bar. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  return `${(bytes / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

/** An error as a person reads it. */
export const describe = (err: unknown) => (err instanceof Error ? err.message : String(err));
