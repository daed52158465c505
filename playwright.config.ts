import { defineConfig } from "@playwright/test";

/** Debian's Chromium: Playwright cannot download its own browser on these machines. */
const CHROMIUM = process.env.SANDGLASS_CHROMIUM ?? "/usr/bin/chromium";

export default defineConfig({
  testDir: "tests/e2e",
  // A real guest boots in most tests: give them minutes. A cold boot takes 25-60 s depending on
  // the machine; the longest test boots twice and reloads.
  timeout: 12 * 60_000,
  expect: { timeout: 90_000 },
  // One test at a time by default: two workers on these 2 cores were tried (2026-12-03) and made
  // no run shorter: two emulated guests slow each other down by more than half (the Debian cold
  // boot took 8.5 min instead of 3), and timed waits ran out. On more cores,
  // SANDGLASS_E2E_WORKERS=n runs n spec files at once (tests of one file stay in order in one
  // worker; files that publish or damage repository files work on their own linkedRepoCopy).
  workers: Number(process.env.SANDGLASS_E2E_WORKERS ?? 1),
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
    // Off unless asked for (SANDGLASS_TRACE=1 keeps a failed test's trace): a trace's screencast
    // encodes every frame the emulated screen draws, and made a small image's cold boot take
    // 39-47 s instead of 23-26 s (2026-12-07, url-image.spec's first test, one run each); CI keeps
    // only the log anyway.
    trace: process.env.SANDGLASS_TRACE ? "retain-on-failure" : "off",
  },
});
