import { mount } from "svelte";
import App from "./App.svelte";

mount(App, { target: document.getElementById("app")! });

// Offline reopening: the service worker keeps the app's own files (see public/sw.js).
if ("serviceWorker" in navigator && import.meta.env.PROD) {
  void navigator.serviceWorker
    .register(new URL("sw.js", document.baseURI), { scope: "./" })
    .then(() => navigator.serviceWorker.ready)
    .then((registration) => {
      const loaded = [location.href.split("#")[0]!, ...performance.getEntriesByType("resource").map((e) => e.name)];
      registration.active?.postMessage({ cache: loaded });
    })
    .catch(() => undefined);
}
