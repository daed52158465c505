/**
 * Adjusts v86's network backends (the guest's virtio card) for Sandglass's page:
 * - fetch (the default): the guest's HTTP goes through the page's fetch(). v86 maps
 *   `http://<port>.external/` to `http://localhost:<port>/`; when that is the server the page came
 *   from under another name (127.0.0.1), the page's own origin is used, so no CORS is needed.
 * - wisp relay: full TCP through a wisp server. The guest's router address (192.168.86.1) stands
 *   for the relay's own machine: connections to it go to the relay's loopback.
 */

/** The guest's gateway in v86's virtual network. */
export const ROUTER_IP = "192.168.86.1";

interface FetchAdapter {
  fetch: (url: string, init?: RequestInit) => Promise<Response>;
}

interface WispAdapter {
  send_wisp_frame: (frame: { type: string; hostname?: string }) => void;
}

/** Rewrites a guest URL aimed at the page's own server by another loopback name. */
export function sameOriginUrl(url: string, page: { hostname: string; port: string; origin: string }): string {
  const target = new URL(url);
  const loopback = (host: string) => host === "localhost" || host === "127.0.0.1" || host === "[::1]";
  if (target.protocol === "http:" && loopback(target.hostname) && loopback(page.hostname) && target.port === page.port) {
    return page.origin + target.pathname + target.search;
  }
  return url;
}

export function adaptNetwork(emulator: unknown, relay: string): void {
  const adapter = (emulator as { network_adapter?: unknown }).network_adapter;
  if (!adapter) return;
  if (relay === "fetch") {
    const fetchAdapter = adapter as FetchAdapter;
    const original = fetchAdapter.fetch.bind(adapter);
    fetchAdapter.fetch = (url, init) => original(sameOriginUrl(String(url), location), init);
  } else {
    const wisp = adapter as WispAdapter;
    const send = wisp.send_wisp_frame.bind(adapter);
    wisp.send_wisp_frame = (frame) => send(frame.type === "CONNECT" && frame.hostname === ROUTER_IP ? { ...frame, hostname: "127.0.0.1" } : frame);
  }
}
