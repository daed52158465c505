/**
 * Which network backend the guest's card uses. In order: the person's own choice (kept in this
 * browser), the relay the app's server offers (`config.json` next to the app, written by
 * `server/main.ts --wisp`), else "fetch": HTTP through the browser, no server needed.
 */
const RELAY_KEY = "sandglass:relay";

/** A relay the page can use: "fetch", or a wisp:// or wisps:// URL. */
export function isRelay(value: string): boolean {
  return value === "fetch" || /^wisps?:\/\/[^\s/]+(\/\S*)?$/.test(value);
}

export async function chooseRelay(): Promise<string> {
  const chosen = localStorage.getItem(RELAY_KEY);
  if (chosen && isRelay(chosen)) return chosen;
  try {
    const response = await fetch(new URL("config.json", document.baseURI), { cache: "no-cache" });
    if (response.ok) {
      const { relay } = (await response.json()) as { relay?: unknown };
      if (typeof relay === "string" && isRelay(relay)) return relay;
    }
  } catch {
    // No config: the default.
  }
  return "fetch";
}
