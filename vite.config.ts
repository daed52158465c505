import { defineConfig, type Plugin } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";
import { resolve } from "node:path";
import { createRepoHandler } from "./server/repo-server.ts";

/** Where `npm start` / `npm test` put the image repository (built by scripts/prepare-guest.sh). */
const REPO_ROOT = resolve(process.env.SANDGLASS_REPO ?? "build/repo");

/** The dev server serves the same repository as the production server, through the same code. */
function repository(): Plugin {
  return {
    name: "sandglass-repository",
    configureServer(server) {
      server.middlewares.use(createRepoHandler({ repoRoot: REPO_ROOT }));
    },
    configurePreviewServer(server) {
      server.middlewares.use(createRepoHandler({ repoRoot: REPO_ROOT }));
    },
  };
}

export default defineConfig({
  plugins: [svelte(), repository()],
  worker: { format: "es" },
  // v86 is one ~750 kB module; it is loaded once and cached as an immutable asset.
  build: { target: "es2022", sourcemap: true, chunkSizeWarningLimit: 1024 },
  server: { host: "127.0.0.1" },
  preview: { host: "127.0.0.1" },
});
