/**
 * Issue 15 acceptance: the share flow with the repository in an S3-compatible bucket. A real S3
 * server on 127.0.0.1 (scripts/s3-test-server.ts) is seeded with the small image from build/repo by
 * publish-image's code; the repository server reads and writes only the bucket. A point is
 * published from the small image, and a second browser (separate storage) opens the link and has
 * the file. The snapshot is in the bucket (written with If-None-Match: *), not in build/repo.
 */
import { access } from "node:fs/promises";
import { join } from "node:path";
import { publishImages } from "../../scripts/publish-image.ts";
import { startS3TestServer, type S3TestServer } from "../../scripts/s3-test-server.ts";
import { startServer } from "../../server/repo-server.ts";
import { openStore, type RepoStore } from "../../server/store.ts";
import { APP_ROOT, REPO_ROOT, expect, run, smallImage, test, waitForSaved, waitForShell, type RepoServer } from "./fixtures.ts";

let s3: S3TestServer;
let store: RepoStore;
let repo: RepoServer;
let close: () => Promise<void>;

test.beforeAll(async () => {
  s3 = await startS3TestServer();
  store = openStore(`s3://${s3.bucket}/repo`, s3.env());
  const seeded = await publishImages({ from: REPO_ROOT, to: store, images: ["small"] });
  expect(seeded.uploaded).toBeGreaterThan(0);
  const requests: RepoServer["requests"] = [];
  const server = await startServer({ store, appRoot: APP_ROOT, onRequest: (r) => requests.push(r) });
  close = () => server.close();
  repo = {
    url: server.url,
    requests,
    chunkRequests: (from = 0) => requests.slice(from).filter((r) => r.path.startsWith("/repo/chunks/")),
    close,
  };
});

test.afterAll(async () => {
  await close?.();
  await s3?.close();
});

test("a point published to a bucket opens in another browser with its file", async ({ page, browser }) => {
  await page.goto(smallImage(repo));
  await waitForShell(page);
  await run(page, "echo in-bucket-$((6*7)) > /root/bucket.txt; sync; echo written-$((2+2))", "written-4");
  await waitForSaved(page);
  const from = repo.requests.length;
  await page.getByTestId("share-now").click();
  await expect(page.getByTestId("share-dialog")).toHaveAttribute("data-phase", "published", { timeout: 120_000 });
  const link = await page.getByTestId("share-link").inputValue();
  const id = /#\/s\/([a-z2-7]{26})$/.exec(link)![1]!;
  const puts = repo.requests.slice(from).filter((r) => r.method === "PUT" && r.path.startsWith("/repo/chunks/"));
  expect(puts.length).toBeGreaterThan(0);
  expect(puts.every((r) => r.status === 201)).toBe(true);

  // The snapshot went to the bucket, with a write that can never overwrite, and nowhere else.
  expect(await store.readText(`snapshots/${id}.json`)).toContain(`"name":"${id}"`);
  const writes = s3.requests.filter((r) => r.method === "PUT" && (r.key.startsWith("repo/chunks/") || r.key.startsWith("repo/snapshots/")));
  expect(writes.every((r) => r.ifNoneMatch === "*")).toBe(true);
  await expect(access(join(REPO_ROOT, "snapshots", `${id}.json`))).rejects.toThrow();

  // Another browser profile resumes the point from the bucket.
  const context = await browser.newContext();
  const other = await context.newPage();
  await other.goto(link);
  await waitForShell(other);
  await run(other, "cat /root/bucket.txt", "in-bucket-42");
  await context.close();
});
