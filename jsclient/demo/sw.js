// Service worker of the Convergo demo: lets the page load when the server
// cannot be reached, so the demo works offline across reloads and not only
// while a tab stays open. The data never goes through here (it lives in
// IndexedDB and syncs over the protocol's /v2/ paths); this only keeps the
// app's own files.
//
// Network first: a reachable server always serves the current files, and
// each response refreshes the cache; the cache answers only when the
// network fails. The page fills the cache with what it loaded before this
// worker took control and with every module of the library, those it
// loads only on demand too (app.js, cacheShell).

const CACHE = 'convergo-demo-v1';

self.addEventListener('install', () => self.skipWaiting());

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

/**
 * The paths of any protocol version (/v1/, /v2/, /v3, ...): the pattern
 * of the client's constants.js (PATHS.versionPattern, the Go package's
 * proto.VersionPathPattern), which the page gives in this worker's URL
 * (?protocol=, app.js workerURL) since a classic worker cannot import it.
 * Without it (or unreadable) the worker caches nothing rather than guess.
 */
const PROTOCOL_PATH = (() => {
  try {
    const src = new URL(self.location.href).searchParams.get('protocol');
    return src ? new RegExp(src) : null;
  } catch {
    return null;
  }
})();

/**
 * Only the app's own static files: never the API (PROTOCOL_PATH), metrics
 * or health.
 */
function cacheable(request) {
  if (request.method !== 'GET' || !PROTOCOL_PATH) return false;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return false;
  return !PROTOCOL_PATH.test(url.pathname) && !/^\/(metrics|healthz|readyz)(\/|$)/.test(url.pathname);
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (!cacheable(request)) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const response = await fetch(request);
      if (response.ok) await cache.put(request, response.clone());
      return response;
    } catch (err) {
      // The demo page is one document whatever ?people= says.
      const hit = await cache.match(request, { ignoreSearch: request.mode === 'navigate' });
      if (hit) return hit;
      throw err;
    }
  })());
});
