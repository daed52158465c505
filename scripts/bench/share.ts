/**
 * Issue 4 benchmark: time and bytes to publish after a 1 MiB change in the guest, and bytes
 * downloaded to open the link in a fresh browser profile.
 */
import type { Browser, Page } from "playwright-core";
import { appAnswers, table, typeApp, waitFor, type Servers } from "./run.ts";

const MiB = 2 ** 20;

/** Clicks Share; returns ms until the link shows and bytes the server received meanwhile. */
async function publish(page: Page, servers: Servers): Promise<{ ms: number; bytes: number; files: number; link: string }> {
  const from = servers.requests.length;
  const started = Date.now();
  await page.getByTestId("share-now").click();
  await page.locator('[data-testid="share-dialog"][data-phase="published"]').waitFor({ timeout: 180_000 });
  const ms = Date.now() - started;
  const link = await page.getByTestId("share-link").inputValue();
  const text = await page.getByTestId("share-cost").innerText();
  const bytes = Number(/\(([\d.]+) (B|KiB|MiB)\)/.exec(text)?.[1] ?? 0) * ({ B: 1, KiB: 1024, MiB: MiB }[/\(([\d.]+) (B|KiB|MiB)\)/.exec(text)?.[2] ?? "B"] ?? 1);
  const files = servers.requests.slice(from).filter((r) => r.method === "PUT" && r.path.startsWith("/repo/chunks/")).length;
  await page.getByTestId("share-dialog").getByRole("button", { name: "Close" }).click();
  return { ms, bytes, files, link };
}

export async function shareBench(browser: Browser, servers: Servers): Promise<void> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(servers.app.url);
  await appAnswers(page);
  const first = await publish(page, servers);
  await typeApp(page, "dd if=/dev/urandom of=/root/change bs=64k count=16 2>/dev/null; sync; echo c-$((3+4))\n");
  await waitFor(async () => (await page.locator(".terminal .xterm-rows").innerText()).includes("c-7"), 120_000, "change");
  await page.locator('[data-testid="saved"][data-saved="true"]').waitFor({ timeout: 60_000 });
  const second = await publish(page, servers);
  await context.close();

  const viewer = await browser.newContext();
  const open = await viewer.newPage();
  const from = servers.requests.length;
  const started = Date.now();
  await open.goto(second.link);
  await appAnswers(open);
  const openMs = Date.now() - started;
  const downloaded = servers.requests.slice(from).filter((r) => r.path.startsWith("/repo/chunks/")).reduce((n, r) => n + r.bytes, 0);
  await viewer.close();
  const kib = (b: number) => `${(b / 1024).toFixed(0)} KiB`;
  table(
    "Share: publish after a 1 MiB change (random data), open the link in a fresh profile",
    ["Step", "Time", "Bytes", "Chunk files uploaded"],
    [
      ["publish the resumed booted machine", `${(first.ms / 1000).toFixed(1)} s`, kib(first.bytes), first.files],
      ["publish again after writing 1 MiB", `${(second.ms / 1000).toFixed(1)} s`, kib(second.bytes), second.files],
      ["open the link → shell answering", `${(openMs / 1000).toFixed(1)} s`, `${kib(downloaded)} downloaded`, ""],
    ],
  );
}
