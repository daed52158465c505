/**
 * Booting a CD from a URL (issue 12): bytes fetched from the image's server until the live CD's
 * shell speaks, vs the image's size, for the test CD and for the same CD with 256 MiB of files
 * the boot never reads. The baseline, in the same page: downloading the big image whole, what
 * opening it without Range requests would cost before the first instruction.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startImageHost } from "../../tests/e2e/image-host.ts";
import { launchWithProfile, type Servers } from "./run.ts";

const MiB = 2 ** 20;

export async function urlBootBench(servers: Servers): Promise<void> {
  execFileSync("bash", ["scripts/build-test-images.sh"], { stdio: "inherit" });
  const live = resolve("build/test-images/live.iso");
  const dir = await mkdtemp(join(tmpdir(), "sandglass-bench-url-"));
  const host = await startImageHost();
  try {
    // The same bootable CD with a big file added (xorriso keeps its boot record).
    const filler = join(dir, "filler.bin");
    await writeFile(filler, randomBytes(256 * MiB));
    const big = join(dir, "big.iso");
    execFileSync("xorriso", ["-indev", live, "-outdev", big, "-map", filler, "/filler.bin", "-boot_image", "any", "replay"], { stdio: "ignore" });
    host.put("live.iso", { path: live });
    host.put("big.iso", { path: big });
    console.log("\nBooting a CD from a URL until its shell prints its marker, fresh profile on disk per row");
    console.log("image                         size       fetched    requests  share   Boot click → marker");
    for (const name of ["live.iso", "big.iso"]) {
      const size = (await stat(name === "big.iso" ? big : live)).size;
      const profile = await mkdtemp(join(tmpdir(), "sandglass-bench-profile-"));
      const context = await launchWithProfile(profile);
      try {
        const page = context.pages()[0] ?? (await context.newPage());
        await page.goto(`${servers.app.url}#/i/small`);
        await page.waitForFunction(() => (window as unknown as { sandglass?: { status: string } }).sandglass?.status === "running", null, { timeout: 180_000 });
        page.once("dialog", (d) => void d.accept(host.url(name)));
        await page.getByTestId("open-url").click();
        const before = host.sent(name);
        const started = Date.now();
        await page.getByTestId("import-start").click();
        await page.locator(".terminal .xterm-rows").getByText("sandglass-live-cd: booted from the CD").waitFor({ timeout: 300_000 });
        const ms = Date.now() - started;
        const after = host.sent(name);
        const fetched = after.bytes - before.bytes;
        console.log(
          `${`${name} (from the URL)`.padEnd(30)}${`${(size / MiB).toFixed(1)} MiB`.padEnd(11)}${`${(fetched / MiB).toFixed(1)} MiB`.padEnd(11)}` +
            `${String(after.requests - before.requests).padEnd(10)}${`${((100 * fetched) / size).toFixed(1)} %`.padEnd(8)}${(ms / 1000).toFixed(1)} s`,
        );
        if (name === "big.iso") {
          const wholeMs = await page.evaluate(async (url) => {
            const t = performance.now();
            await (await fetch(url, { cache: "no-store" })).arrayBuffer();
            return performance.now() - t;
          }, host.url(name));
          console.log(`${"big.iso downloaded whole".padEnd(30)}${`${(size / MiB).toFixed(1)} MiB`.padEnd(11)}${`${(size / MiB).toFixed(1)} MiB`.padEnd(11)}${"1".padEnd(10)}${"100 %".padEnd(8)}${(wholeMs / 1000).toFixed(1)} s (download only, no boot)`);
        }
      } finally {
        await context.close();
        await rm(profile, { recursive: true, force: true });
      }
    }
  } finally {
    await host.close();
    await rm(dir, { recursive: true, force: true });
  }
}
