import { defineConfig } from "@playwright/test";

/** Debian's Chromium: Playwright cannot download its own browser on these machines. */
const CHROMIUM = process.env.SANDGLASS_CHROMIUM ?? "/usr/bin/chromium";

export default defineConfig({
  testDir: "tests/e2e",
  // A real guest boots in most tests: give them minutes, and run them one at a time (2 cores).
  // A cold boot takes 25-60 s depending on the machine; the longest test boots twice and reloads.
  timeout: 12 * 60_000,
  expect: { timeout: 90_000 },
  workers: 1,
  fullyParallel: false,
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
