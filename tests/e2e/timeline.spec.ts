/**
 * Issue 3 acceptance: checkpoints, whole-machine rewind without reboot, branches that keep the
 * other future, disk-only rewind to an exact write, and resume after reload.
 */
import { checkpoint, clickPoint, expect, smallImage, run, terminal, test, waitForShell } from "./fixtures.ts";

test("rewind to a checkpoint, branch, switch branches, reload resumes", async ({ page, repo }) => {
  await page.goto(smallImage(repo));
  await waitForShell(page);
  // A shell variable lives only in RAM: seeing it after a rewind proves there was no reboot.
  await run(page, "export MARK=ram-$((6*7)); echo precious-$((2*21)) > /root/keep.txt; sync; echo saved-$((1+1))", "saved-2");
  const good = await checkpoint(page);

  await run(page, "rm -rf /root/keep.txt /bin; echo wrecked-$((5*5))", "wrecked-25");
  await run(page, "test -d /bin || echo nobin-$((3+3))", "nobin-6");
  await checkpoint(page); // the wrecked state, on the first branch

  await clickPoint(page, `[data-id="${good}"]`);
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, "echo $MARK-$((1+2)); cat /root/keep.txt", "precious-42");
  await expect(page.locator(".terminal .xterm-rows")).toContainText("ram-42-3");

  // The first write after the rewind starts a new branch; the wrecked future stays reachable.
  await run(page, "echo branch-b-$((3*4)) > /root/b.txt; sync; echo wrote-$((4+4))", "wrote-8");
  await expect(page.getByTestId("branch")).toHaveCount(2);
  await checkpoint(page);

  await page.locator('[data-testid="branch"][data-branch="0"] [data-testid="switch-branch"]').click();
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, "ls /bin 2>/dev/null || echo nobin-$((2+2))", "nobin-4");

  await page.locator('[data-testid="branch"][data-branch="1"] [data-testid="switch-branch"]').click();
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, "cat /root/b.txt; echo $MARK-$((9-1))", "ram-42-8");
  await expect(page.locator(".terminal .xterm-rows")).toContainText("branch-b-12");

  // Reload: resumes the newest checkpoint of this branch, running, no cold boot.
  const branchesBefore = await page.getByTestId("branch").count();
  await page.reload();
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, "echo $MARK-$((5*5))", "ram-42-25");
  await expect(page.getByTestId("branch")).toHaveCount(branchesBefore);
});

test("disk-only rewind to a point between two writes cold-boots on exactly that content", async ({ page, repo }) => {
  await page.goto(smallImage(repo));
  await waitForShell(page);
  // Before the command: its quiet point comes 2 s after `sync`, which a slow guest and terminal
  // can reach before the command's output is read here.
  const written = Date.now();
  await run(page, "echo first-version > /root/f; sync; sha256sum /root/f | cut -c1-16 | sed 's/^/sum1=/'", /sum1=[0-9a-f]{16}/);
  const text = await page.locator(".terminal .xterm-rows").innerText();
  const sum1 = /sum1=([0-9a-f]{16})/.exec(text)![1]!;
  // Wait for the quiet point that follows the first write (the disk idles after `sync`), and for
  // longer than a quiet point takes (2 s idle): one set off before the command may come first.
  const quiet = page.locator('[data-testid="point"][data-kind="quiet"]');
  const quietTimes = () => quiet.evaluateAll((els) => els.map((e) => Number(e.getAttribute("data-time"))));
  await expect.poll(async () => (await quietTimes()).filter((t) => t > written).length, { timeout: 30_000 }).toBeGreaterThan(0);
  await page.waitForTimeout(3000);
  const cutoff = Date.now();
  await run(page, "echo second-version-longer > /root/f; sync; echo two-$((2*2))", "two-4");
  await page.waitForTimeout(3000);

  // The newest quiet point before the second write.
  const quietPoints = await quiet.evaluateAll((els) =>
    els.map((e) => ({ time: Number(e.getAttribute("data-time")), id: e.getAttribute("data-id") })),
  );
  const target = quietPoints.filter((p) => p.time < cutoff).sort((a, b) => a.time - b.time).pop();
  expect(target).toBeTruthy();
  page.once("dialog", (d) => void d.accept());
  await clickPoint(page, `[data-id="${target!.id}"]`);
  await expect(terminal(page)).toContainText("disk rewound to Quiet point");
  await waitForShell(page);
  await run(page, "sha256sum /root/f | cut -c1-16 | sed 's/^/now=/'", `now=${sum1}`);
  await run(page, "cat /root/f; echo $((7+7))", "first-version");
});

test("a bookmark or checkpoint just made is in view, even with the strip scrolled back", async ({ page, repo }) => {
  await page.setViewportSize({ width: 640, height: 800 });
  await page.goto(smallImage(repo));
  await waitForShell(page);
  // More points than the strip shows at once (only the cards in view are in the page).
  let newest = "";
  for (let i = 0; i < 10; i++) {
    await run(page, `echo ${i} > /root/n; sync; echo made-$((${i}+100))`, `made-${i + 100}`);
    newest = await checkpoint(page);
  }
  const strip = page.getByTestId("strip");
  const scrollBack = () => strip.evaluate((el) => (el.scrollLeft = 0));
  await scrollBack();
  await expect(strip.locator(`[data-testid="point"][data-id="${newest}"]`)).toHaveCount(0);

  page.once("dialog", (d) => void d.accept("look here"));
  await page.getByRole("button", { name: "Bookmark" }).click();
  await expect(strip.locator('[data-testid="point"][data-kind="bookmark"]')).toBeInViewport();

  await scrollBack();
  const made = await checkpoint(page);
  await expect(strip.locator(`[data-testid="point"][data-id="${made}"]`)).toBeInViewport();

  // Points the machine makes on its own (quiet points, automatic checkpoints) leave a person who
  // scrolled back where they are.
  await scrollBack();
  const count = () => page.evaluate(() => (window as unknown as { sandglass: { timeline: { checkpoints: unknown[]; markers: unknown[] } } }).sandglass.timeline.checkpoints.length);
  const before = await count();
  await run(page, "echo more > /root/more; sync; echo busy-$((5+6))", "busy-11");
  await expect.poll(count, { timeout: 60_000 }).toBeGreaterThan(before);
  expect(await strip.evaluate((el) => el.scrollLeft)).toBe(0);
});

test("a rewind asked for while an automatic checkpoint is being stored lands, and that checkpoint is kept with its own content", async ({ page, repo }) => {
  await page.goto(smallImage(repo));
  await waitForShell(page);
  await run(page, "export STAGE=one-$((1+1)); echo stage-one > /root/stage; sync; echo ok-$((2*5))", "ok-10");
  const before = await checkpoint(page);
  const checkpoints = () =>
    page.evaluate(() => {
      const s = (window as unknown as { sandglass: { timeline: { checkpoints: { id: string; auto: boolean; time: number }[] } | null } }).sandglass;
      return s.timeline?.checkpoints ?? [];
    });
  const known = new Set((await checkpoints()).map((c) => c.id));

  // A write, then the guest settles: a second later the session's timer takes a checkpoint. The
  // card is clicked (in the page, at once) once that checkpoint's pause is over and its store goes on.
  await run(page, "export STAGE=two-$((1+1)); echo stage-two > /root/stage; sync; echo ok-$((3*5))", "ok-15");
  const overlapped = await page.evaluate(async (id) => {
    const s = (window as unknown as { sandglass: { busy: boolean } }).sandglass;
    const until = performance.now() + 60_000;
    while (!s.busy && performance.now() < until) await new Promise((r) => setTimeout(r, 1));
    if (!s.busy) throw new Error("no automatic checkpoint started");
    await new Promise((r) => setTimeout(r, 0));
    (document.querySelector(`[data-testid="point"][data-id="${id}"]`) as HTMLElement).click();
    return s.busy; // still storing when the rewind began
  }, before);
  expect(overlapped, "the rewind began while the automatic checkpoint was being stored").toBe(true);
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, "echo $STAGE-$((7*7)); cat /root/stage", "one-2-49");
  await expect(terminal(page)).toContainText("stage-one");

  // The checkpoint stored meanwhile is listed (once its store lands, without `pending`), is in
  // IndexedDB (a reload lists it) and holds what the guest had then. It lies ahead of "now" on
  // the branch (no write since the rewind), so the strip does not draw it: it is restored as its
  // card would (the session's rewindTo).
  let stored = "";
  await expect
    .poll(async () => {
      stored = (await checkpoints()).find((c) => c.auto && !known.has(c.id) && !(c as { pending?: true }).pending)?.id ?? "";
      return stored;
    })
    .not.toBe("");
  await page.reload();
  await waitForShell(page);
  await expect.poll(async () => (await checkpoints()).some((c) => c.id === stored)).toBe(true);
  await page.evaluate(async (id) => {
    type Summary = { id: string };
    const s = (window as unknown as { sandglass: { timeline: { checkpoints: Summary[] }; rewindTo(c: Summary): Promise<void> } }).sandglass;
    await s.rewindTo(s.timeline.checkpoints.find((c) => c.id === id)!);
  }, stored);
  await expect(page.getByTestId("status")).toHaveText("Running");
  await run(page, "echo $STAGE-$((8*8)); cat /root/stage", "two-2-64");
  await expect(terminal(page)).toContainText("stage-two");
});
