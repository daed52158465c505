// Keeps the app itself (page, scripts, emulator, BIOS) available offline, so a machine whose disk
// is all in IndexedDB opens with the server down. Disk chunks and manifests are never cached here:
// the disk worker keeps those in IndexedDB and counts them.
const CACHE = "sandglass-app-v1";
const scope = new URL(self.registration.scope);

function isAppFile(url) {
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return false;
  const path = url.pathname.slice(scope.pathname.length);
  return path === "" || path === "index.html" || path === "favicon.svg" || path.startsWith("assets/") || path.startsWith("repo/bios/");
}

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// The page sends what it loaded before this worker controlled it, with a port for the answer:
// how many of those files are now kept (the app works offline only once they all are).
self.addEventListener("message", (event) => {
  const urls = (event.data?.cache ?? []).filter((u) => isAppFile(new URL(u)));
  const reply = event.ports[0];
  event.waitUntil(
    caches.open(CACHE).then(async (cache) => {
      const kept = await Promise.all(urls.map((u) => cache.add(u).then(() => true, () => false)));
      reply?.postMessage({ kept: kept.filter(Boolean).length, total: urls.length });
    }),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || !isAppFile(url)) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      // Hashed assets never change: serve them from the cache. Everything else: network first.
      if (url.pathname.includes("/assets/")) {
        const hit = await cache.match(event.request);
        if (hit) return hit;
      }
      try {
        const response = await fetch(event.request);
        if (response.ok) await cache.put(event.request, response.clone());
        return response;
      } catch (err) {
        const hit = await cache.match(event.request, { ignoreSearch: true });
        if (hit) return hit;
        throw err;
      }
    })(),
  );
});
