/**
 * A full storage quota: the machine keeps running, the page says what is at stake, and nothing the
 * guest wrote is lost once there is room again.
 *
 * Chromium honours a quota override only for a profile on disk (Playwright's usual contexts are
 * in-memory ones with a fixed pool), so this test launches its own persistent context.
 */
import { chromium } from "@playwright/test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, smallImage, run, terminal, test, waitForSaved, waitForShell } from "./fixtures.ts";

test("a full quota says so, keeps the machine running, and loses no write once there is room", async ({ repo, launchOptions }) => {
  const profile = await mkdtemp(join(tmpdir(), "sandglass-quota-"));
  const context = await chromium.launchPersistentContext(profile, { ...launchOptions, headless: true, viewport: { width: 1400, height: 900 } });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const cdp = await context.newCDPSession(page);
    const origin = new URL(repo.url).origin;
    // Chromium reads an origin's quota when its storage first opens, so the limit is set before the
    // page loads: enough to open the site's booted machine (~21 MiB stored, ~31 MiB with its
    // first checkpoint), not enough for 16 MiB more that do not compress.
    await cdp.send("Storage.overrideQuotaForOrigin", { origin, quotaSize: 32 * 2 ** 20 });
    await page.goto(smallImage(repo));
    await waitForShell(page);
    await run(page, "dd if=/dev/urandom of=/root/big bs=1M count=16 2>/dev/null; sync; echo wrote-$((6*7))", "wrote-42");
    await expect(page.getByTestId("notice")).toContainText("storage for Sandglass is full", { timeout: 60_000 });
    await expect(page.getByTestId("saved")).toHaveAttribute("data-saved", "false");

    // The guest runs on and still sees every byte it wrote.
    await run(page, "md5sum /root/big | cut -c1-32 | sed 's/^/sum-/'", /sum-[0-9a-f]{32}/);
    const sum = /sum-([0-9a-f]{32})/.exec(await terminal(page).innerText())![1]!;

    // Room again: the next checkpoint stores everything held back, and the notice goes away.
    await cdp.send("Storage.overrideQuotaForOrigin", { origin });
    await page.getByRole("button", { name: "Checkpoint" }).click();
    await expect(page.getByTestId("notice")).toHaveCount(0, { timeout: 60_000 });
    await waitForSaved(page);

    // A reload resumes from storage alone: the file is there, byte for byte.
    await page.reload();
    await waitForShell(page);
    await run(page, "md5sum /root/big | cut -c1-32 | sed 's/^/again-/'", `again-${sum}`);
  } finally {
    await context.close();
    await rm(profile, { recursive: true, force: true });
  }
});
