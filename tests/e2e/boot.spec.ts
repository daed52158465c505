/**
 * Issue 2 acceptance: a real guest boots in Chromium from the real repository server through the
 * copy-on-read IndexedDB disk; its writes survive reloads; reset discards them.
 */
import { expect, run, smallImage, terminal, test, waitForSaved, waitForShell } from "./fixtures.ts";

test("cold boot, persist a file across reload with no chunk fetched, reset to image", async ({ page, repo }) => {
  // "plain" has no booted snapshot: the kernel boots from chunks streamed through the disk worker.
  await page.goto(`${repo.url}#/i/plain`);
  await waitForShell(page);
  await run(page, "echo hello-$((6*7))", "hello-42");
  await expect(terminal(page)).toContainText("Welcome to Sandglass");
  const coldChunks = repo.chunkRequests().length;
  expect(coldChunks).toBeGreaterThan(0);
  await expect(page.getByTestId("network-bytes")).not.toHaveText("0 B");

  // A write the guest makes durable, then a reload: the second boot reads only local storage.
  await run(page, "echo kept-$((40+2)) > /root/note.txt && sync && echo synced-$((1+1))", "synced-2");
  await waitForSaved(page);
  const beforeReload = repo.requests.length;
  await page.reload();
  await waitForShell(page);
  await run(page, "cat /root/note.txt", "kept-42");
  expect(repo.chunkRequests(beforeReload)).toEqual([]);
  await expect(page.getByTestId("network-bytes")).toHaveText("0 B");

  // Reset to image: the machine reboots on the repository's disk and the file is gone.
  page.once("dialog", (dialog) => void dialog.accept());
  await page.getByRole("button", { name: "Reset to image" }).click();
  await waitForShell(page);
  await run(page, "test -e /root/note.txt || echo gone-$((3*3))", "gone-9");
});

test("an image with a booted snapshot resumes it; another image is addressable", async ({ page, repo }) => {
  // The default image (Debian) resumes its booted snapshot too: see debian.spec.ts.
  await page.goto(smallImage(repo));
  await expect(page.getByTestId("machine-name")).toHaveText("small");
  await waitForShell(page);
  await expect(terminal(page)).not.toContainText("Welcome to Sandglass"); // resumed, not booted
  // Another image by name: its machine starts booting from its own disk (the test above follows
  // that boot to a shell).
  await page.goto("about:blank");
  const from = repo.requests.length;
  await page.goto(`${repo.url}#/i/plain`);
  await expect(page.getByTestId("machine-name")).toHaveText("plain");
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", /booting|running/);
  await expect.poll(() => repo.chunkRequests(from).length).toBeGreaterThan(0);
});
