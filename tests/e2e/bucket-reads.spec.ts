/**
 * Issue 15, item 2: reads straight from the bucket, publishing through a Sandglass server. Three
 * origins, as a site would have them: the app on a static server, the repository in a bucket on the
 * loopback S3 server (path style, read anonymously, with the CORS rule README gives set through the
 * S3 API), and a server on the same bucket that takes uploads (`corsOrigin`: the app's origin). The
 * app is built once for this file with VITE_SANDGLASS_REPO = the bucket's URL and
 * VITE_SANDGLASS_PUBLISH = that server's /repo/. The app server could serve the repository too
 * (it has the bucket): none of the reads may go there.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { PutBucketCorsCommand } from "@aws-sdk/client-s3";
import type { BrowserContext, Request } from "@playwright/test";
import { publishImages } from "../../scripts/publish-image.ts";
import { startS3TestServer, type S3TestServer } from "../../scripts/s3-test-server.ts";
import { startServer, type RequestRecord, type RunningServer } from "../../server/repo-server.ts";
import { openStore, type S3Store } from "../../server/store.ts";
import { REPO_ROOT, expect, run, test, waitForSaved, waitForShell } from "./fixtures.ts";

/** A server on loopback and what it was asked. */
interface Served {
  server: RunningServer;
  requests: RequestRecord[];
}

let s3: S3TestServer;
let store: S3Store;
let outDir: string;
let app: Served;
let uploads: Served;
/** The repository's URL in the bucket, as the app reads it. */
let bucketRepo: string;

async function serve(options: Parameters<typeof startServer>[0]): Promise<Served> {
  const requests: RequestRecord[] = [];
  return { server: await startServer({ ...options, onRequest: (r) => requests.push(r) }), requests };
}

/** Every request a browser context makes (its pages and their workers). */
function watch(context: BrowserContext): Request[] {
  const seen: Request[] = [];
  context.on("request", (r) => seen.push(r));
  return seen;
}

/** Requests for repository files (chunks, manifests, BIOS), wherever they went. */
const repositoryReads = (seen: Request[]) =>
  seen.filter((r) => r.method() === "GET" && /\/(chunks|images|snapshots|bios)\/[^/]+$/.test(new URL(r.url()).pathname));

test.beforeAll(async () => {
  s3 = await startS3TestServer();
  store = openStore(`s3://${s3.bucket}/repo`, s3.env()) as S3Store;
  expect((await publishImages({ from: REPO_ROOT, to: store, images: ["small"] })).uploaded).toBeGreaterThan(0);
  bucketRepo = `${s3.endpoint}/${s3.bucket}/repo/`;

  outDir = await mkdtemp(join(tmpdir(), "sandglass-app-"));
  app = await serve({ store, appRoot: outDir });
  const appOrigin = new URL(app.server.url).origin;
  uploads = await serve({ store, corsOrigin: appOrigin });
  // The bucket's CORS rule of README: GET and HEAD from the app's origin only.
  await store.client.send(
    new PutBucketCorsCommand({
      Bucket: s3.bucket,
      CORSConfiguration: {
        CORSRules: [
          { AllowedOrigins: [appOrigin], AllowedMethods: ["GET", "HEAD"], AllowedHeaders: ["*"], ExposeHeaders: ["ETag", "Content-Length", "Content-Range"], MaxAgeSeconds: 3600 },
        ],
      },
    }),
  );

  const started = Date.now();
  await promisify(execFile)(process.execPath, [join("node_modules", "vite", "bin", "vite.js"), "build", "--logLevel", "error", "--outDir", outDir, "--emptyOutDir"], {
    env: { ...process.env, VITE_SANDGLASS_REPO: bucketRepo, VITE_SANDGLASS_PUBLISH: `${uploads.server.url}repo/` },
    maxBuffer: 16 * 1024 * 1024,
  });
  console.log(`vite build with the bucket's URLs: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const assets = await readdir(join(outDir, "assets"));
  const code = (await Promise.all(assets.filter((a) => a.endsWith(".js")).map((a) => readFile(join(outDir, "assets", a), "utf8")))).join("\n");
  expect(code).toContain(bucketRepo);
});

test.afterAll(async () => {
  await app?.server.close();
  await uploads?.server.close();
  await s3?.close();
  if (outDir) await rm(outDir, { recursive: true, force: true });
});

test("reads come from the bucket, a point is published through the server, another browser opens it from the bucket", async ({ browser }) => {
  const appOrigin = new URL(app.server.url).origin;
  const repoOnApp = () => app.requests.filter((r) => r.path.startsWith("/repo"));

  // A: the small image, every file of it read from the bucket.
  const a = await browser.newContext();
  const seenA = watch(a);
  const page = await a.newPage();
  const s3Before = s3.requests.length;
  await page.goto(`${app.server.url}#/i/small`);
  await waitForShell(page);
  const readsA = repositoryReads(seenA);
  expect(readsA.some((r) => r.url().startsWith(`${bucketRepo}chunks/`))).toBe(true);
  expect(readsA.some((r) => r.url() === `${bucketRepo}images/small.json`)).toBe(true);
  expect(readsA.filter((r) => !r.url().startsWith(bucketRepo)).map((r) => r.url())).toEqual([]);
  expect(s3.requests.slice(s3Before).filter((r) => r.method === "GET" && r.key.startsWith("repo/chunks/") && r.status === 200).length).toBeGreaterThan(0);
  expect(repoOnApp()).toEqual([]);
  expect(uploads.requests).toEqual([]);

  // Publishing goes to the server (cross-origin: preflights, then the API), which writes the
  // bucket by conditional PUT; the browser never writes to the bucket.
  await run(page, "echo from-bucket-$((6*7)) > /root/bucket.txt; sync; echo written-$((2+2))", "written-4");
  await waitForSaved(page);
  const s3Publish = s3.requests.length;
  await page.getByTestId("share-now").click();
  await expect(page.getByTestId("share-dialog")).toHaveAttribute("data-phase", "published", { timeout: 120_000 });
  const link = await page.getByTestId("share-link").inputValue();
  expect(link.startsWith(`${app.server.url}#/s/`)).toBe(true);
  const id = /#\/s\/([a-z2-7]{26})$/.exec(link)![1]!;

  expect(uploads.requests.some((r) => r.method === "OPTIONS" && r.status === 204)).toBe(true);
  const api = uploads.requests.filter((r) => r.method !== "OPTIONS");
  expect(api.some((r) => r.method === "POST" && r.path === "/repo/api/missing" && r.status === 200)).toBe(true);
  const chunkPuts = api.filter((r) => r.method === "PUT" && r.path.startsWith("/repo/chunks/"));
  expect(chunkPuts.length).toBeGreaterThan(0);
  expect(chunkPuts.every((r) => r.status === 201)).toBe(true);
  expect(api.some((r) => r.method === "PUT" && r.path === `/repo/snapshots/${id}.json` && r.status === 201)).toBe(true);
  expect(api.filter((r) => r.method === "GET" || r.method === "HEAD")).toEqual([]);
  expect(seenA.filter((r) => r.method() !== "GET" && r.url().startsWith(s3.endpoint)).map((r) => `${r.method()} ${r.url()}`)).toEqual([]);
  const written = s3.requests.slice(s3Publish).filter((r) => r.method === "PUT" && /^repo\/(chunks|snapshots)\//.test(r.key));
  expect(written.map((r) => r.key)).toContain(`repo/snapshots/${id}.json`);
  expect(written.filter((r) => r.key.startsWith("repo/chunks/")).length).toBe(chunkPuts.length);
  expect(written.every((r) => r.ifNoneMatch === "*" && r.status === 200)).toBe(true);
  expect(repoOnApp()).toEqual([]);

  // What the server wrote is served by the bucket as a browser on the app's origin needs it.
  const manifest = await fetch(`${bucketRepo}snapshots/${id}.json`, { headers: { Origin: appOrigin } });
  expect(manifest.status).toBe(200);
  expect(manifest.headers.get("access-control-allow-origin")).toBe(appOrigin);
  expect(manifest.headers.get("cache-control")).toBe("no-cache");
  expect(manifest.headers.get("content-type")).toContain("application/json");
  const chunk = await fetch(`${s3.endpoint}/${s3.bucket}/${written.find((r) => r.key.startsWith("repo/chunks/"))!.key}`, { headers: { Origin: appOrigin } });
  expect(chunk.status).toBe(200);
  expect(chunk.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
  expect(chunk.headers.get("access-control-expose-headers")).toContain("ETag");
  await a.close();

  // B: a fresh browser opens the link; the snapshot and its chunks come from the bucket.
  const b = await browser.newContext();
  const seenB = watch(b);
  const other = await b.newPage();
  const uploadsBefore = uploads.requests.length;
  await other.goto(link);
  await waitForShell(other);
  await run(other, "cat /root/bucket.txt", "from-bucket-42");
  const readsB = repositoryReads(seenB);
  expect(readsB.some((r) => r.url() === `${bucketRepo}snapshots/${id}.json`)).toBe(true);
  expect(readsB.filter((r) => !r.url().startsWith(bucketRepo)).map((r) => r.url())).toEqual([]);
  expect(uploads.requests.length).toBe(uploadsBefore);
  expect(repoOnApp()).toEqual([]);
  await b.close();

  // The uploads server holds only the repository: anything else is a plain 404, not a hang.
  expect((await fetch(uploads.server.url)).status).toBe(404);
});
