/**
 * Issue 3: several machines side by side, each renamed, discarded or started fresh from its image,
 * each keeping its own disk.
 */
import { expect, smallImage, run, test, waitForSaved, waitForShell } from "./fixtures.ts";

test("machines: start a fresh one beside the first, rename, switch, discard", async ({ page, repo }) => {
  await page.goto(smallImage(repo));
  await waitForShell(page);
  await run(page, "echo first-$((1+1)) > /root/which; sync; echo ok-$((2+2))", "ok-4");
  await waitForSaved(page);
  const firstName = await page.getByTestId("machine-name").innerText();

  // A new machine of the same image: its own disk, without the first machine's file.
  await page.getByTestId("machines-button").click();
  await page.getByTestId("new-machine").click();
  await waitForShell(page);
  await expect(page.getByTestId("machine-name")).not.toHaveText(firstName);
  await run(page, "cat /root/which 2>/dev/null || echo none-$((3+3))", "none-6");
  await run(page, "echo second-$((2+2)) > /root/which; sync; echo ok-$((5+5))", "ok-10");
  await waitForSaved(page);

  // Rename this one; both are listed.
  await page.getByTestId("machines-button").click();
  const machines = page.getByTestId("machine");
  await expect(machines).toHaveCount(2);
  page.once("dialog", (d) => void d.accept("scratch box"));
  await page.locator('[data-testid="machine"].current [data-testid="rename"]').click();
  await expect(page.getByTestId("machine-name")).toHaveText("scratch box");

  // Open the first machine: its own file is there.
  await page.locator('[data-testid="machine"]:not(.current) a').click();
  await waitForShell(page);
  await expect(page.getByTestId("machine-name")).toHaveText(firstName);
  await run(page, "cat /root/which", "first-2");

  // Discard the renamed one from here; only this machine remains.
  await page.getByTestId("machines-button").click();
  page.once("dialog", (d) => void d.accept());
  await page.locator('[data-testid="machine"]:not(.current) [data-testid="discard"]').click();
  await expect(page.getByTestId("machine")).toHaveCount(1);
  await page.reload();
  await page.getByTestId("machines-button").click();
  await expect(page.getByTestId("machine")).toHaveCount(1);
  await expect(page.getByTestId("machine")).not.toContainText("scratch box");
});
