import { beginStartup } from "./app/startup.ts";

// The machine starts opening (disk worker, emulator downloads) while the UI's code loads.
const startup = beginStartup();
const [{ mount }, { default: App }] = await Promise.all([import("svelte"), import("./App.svelte")]);
mount(App, { target: document.getElementById("app")!, props: { startup } });

/**
 * Registering re-downloads the app's files into the worker's cache (emulator included), and once
 * it controls the page every request passes through it: that waits until the machine has started.
 */
const SERVICE_WORKER_DELAY_MS = 10_000;

// Offline reopening: the service worker keeps the app's own files (see public/sw.js).
if ("serviceWorker" in navigator && import.meta.env.PROD) {
  setTimeout(registerServiceWorker, SERVICE_WORKER_DELAY_MS);
}

/**
 * Registers the service worker and hands it the files this page loaded. When it has kept them all,
 * `<html data-offline="ready">` says the app would reopen without the server (tests wait on it).
 */
function registerServiceWorker(): void {
  void navigator.serviceWorker
    .register(new URL("sw.js", document.baseURI), { scope: "./" })
    .then(() => navigator.serviceWorker.ready)
    .then(
      (registration) =>
        new Promise<{ kept: number; total: number }>((resolve) => {
          const loaded = [location.href.split("#")[0]!, ...performance.getEntriesByType("resource").map((e) => e.name)];
          const channel = new MessageChannel();
          channel.port1.onmessage = (event: MessageEvent<{ kept: number; total: number }>) => resolve(event.data);
          registration.active?.postMessage({ cache: loaded }, [channel.port2]);
        }),
    )
    .then(({ kept, total }) => {
      document.documentElement.dataset.offline = kept === total ? "ready" : "partial";
    })
    .catch(() => undefined);
}
