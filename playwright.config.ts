import { defineConfig } from "@playwright/test";

/** Debian's Chromium: Playwright cannot download its own browser on these machines. */
const CHROMIUM = process.env.SANDGLASS_CHROMIUM ?? "/usr/bin/chromium";

export default defineConfig({
  testDir: "tests/e2e",
  // A real guest boots in most tests: give them minutes. A cold boot takes 25-60 s depending on
  // the machine; the longest test boots twice and reloads.
  timeout: 12 * 60_000,
  expect: { timeout: 90_000 },
  // Two spec files at a time: much of a test is waiting (a guest idling at its prompt, a server
  // held down, a save settling), so the second worker fills the first one's idle core. Tests of
  // one file run in order in one worker (several share a booted guest). Files that publish or damage
  // repository files work on their own copy (linkedRepoCopy). SANDGLASS_E2E_WORKERS=1: one at a time.
  workers: Number(process.env.SANDGLASS_E2E_WORKERS ?? 2),
  fullyParallel: false,
  globalSetup: "./tests/e2e/global-setup.ts",
  retries: 0,
  reporter: [["list"]],
  use: {
    headless: true,
    viewport: { width: 1400, height: 900 },
    launchOptions: {
      executablePath: CHROMIUM,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
      ],
    },
    trace: "retain-on-failure",
  },
});
