/**
 * How long the page waits out an unreachable repository before it stops the machine with an
 * error. The default is the engine's (OUTAGE_PATIENCE_MS, 45 s); this browser may keep another
 * number of seconds under `sandglass:repo-patience` (someone on a flaky link may want minutes; the
 * outage tests want seconds rather than wait out the default).
 */
export const PATIENCE_KEY = "sandglass:repo-patience";

/** The seconds chosen in this browser, or null for the default (nothing kept, or not a sensible number). */
export function chosenPatience(): number | null {
  const raw = localStorage.getItem(PATIENCE_KEY);
  if (raw === null) return null;
  const seconds = Number(raw);
  return Number.isFinite(seconds) && seconds > 0 && seconds <= 3600 ? seconds : null;
}
