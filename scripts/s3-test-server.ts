/**
 * A real S3-compatible server on 127.0.0.1 for the tests, the benchmarks and development: s3rver
 * (the S3 REST API over a local folder: signatures, ListObjectsV2, Range, CopyObject, CORS) with a
 * thin layer in front of it for what s3rver (3.7.1, the last release) lacks:
 *   - `If-None-Match: *` on PutObject: answered 412 PreconditionFailed when the key exists, checked
 *     and written under a per-key lock, as AWS S3, R2 and MinIO document it (s3rver ignores it);
 *   - a PUT whose client went away before it finished leaves no object (s3rver writes in place and
 *     would leave a truncated one; S3 never does);
 *   - listings of more than one page work on Node 17+ (allowS3rverTokens).
 * tests/server/s3-store.test.ts shows the layer refuses the second of two racing writes and that
 * Sandglass sends the header.
 *
 *   npm run s3:dev [-- --port 4569 --dir build/s3-dev --bucket sandglass]
 *
 * starts one by hand (credentials S3RVER / S3RVER, region us-east-1, path-style), then e.g.
 *   SANDGLASS_STORE=s3://sandglass/repo SANDGLASS_S3_ENDPOINT=http://127.0.0.1:4569 \
 *   AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER npm start
 */
import crypto from "node:crypto";
import { mkdtemp, rm, utimes } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import S3rver from "s3rver";

/**
 * s3rver makes ListObjectsV2 continuation tokens with single DES, which OpenSSL 3 (Node 17 on)
 * refuses, so any listing of more than one page failed. Triple DES with the key three times is the
 * same cipher and is still provided: s3rver's calls (only "des") are given that.
 */
function allowS3rverTokens(): void {
  const c = crypto as unknown as Record<string, unknown> & { __sandglassDes?: true };
  if (c.__sandglassDes) return;
  const cipher = crypto.createCipheriv.bind(crypto) as (alg: string, key: Buffer, iv: Buffer) => crypto.Cipheriv;
  const decipher = crypto.createDecipheriv.bind(crypto) as (alg: string, key: Buffer, iv: Buffer) => crypto.Decipheriv;
  c.createCipheriv = (alg: string, key: Buffer, iv: Buffer) => (alg === "des" ? cipher("des-ede3-cbc", Buffer.concat([key, key, key]), iv) : cipher(alg, key, iv));
  c.createDecipheriv = (alg: string, key: Buffer, iv: Buffer) => (alg === "des" ? decipher("des-ede3-cbc", Buffer.concat([key, key, key]), iv) : decipher(alg, key, iv));
  c.__sandglassDes = true;
}

/** s3rver's fixed credentials (it checks signatures made with them). */
export const S3_TEST_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
export const S3_TEST_REGION = "us-east-1";

/** One request the server saw, for tests that check what Sandglass sends. */
export interface S3Request {
  method: string;
  key: string;
  ifNoneMatch: string | null;
  status: number;
}

export interface S3TestServer {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  bucket: string;
  /** The folder s3rver keeps objects in. */
  dir: string;
  requests: S3Request[];
  /** Conditional PUTs refused because the key existed. */
  preconditionsFailed: number;
  /** Sets an object's LastModified to `ms` ago (as an old upload would have it). */
  age(key: string, ms: number): Promise<void>;
  /** Environment for a child process (the publish command) to reach this server. */
  env(): Record<string, string>;
  close(): Promise<void>;
}

interface Store {
  existsObject(bucket: string, key: string): Promise<boolean>;
  deleteObject(bucket: string, key: string): Promise<void>;
  getResourcePath(bucket: string, key: string, resource: string): string;
}

/** CORS for the bucket: any origin may GET and HEAD (the app reading the bucket directly). */
const CORS = `<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedMethod>HEAD</AllowedMethod><AllowedHeader>*</AllowedHeader><ExposeHeader>ETag</ExposeHeader><ExposeHeader>Content-Range</ExposeHeader><MaxAgeSeconds>3600</MaxAgeSeconds></CORSRule></CORSConfiguration>`;

const PRECONDITION_FAILED =
  '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-None-Match</Condition></Error>';

/** Starts the server on 127.0.0.1 (port 0: a free one) with one bucket; a fresh folder unless `dir`. */
export async function startS3TestServer(
  options: { port?: number; dir?: string; bucket?: string; onRequest?: (method: string, key: string) => void } = {},
): Promise<S3TestServer> {
  const bucket = options.bucket ?? "sandglass";
  const own = !options.dir;
  allowS3rverTokens();
  const dir = options.dir ? resolve(options.dir) : await mkdtemp(join(tmpdir(), "sandglass-s3-"));
  const s3 = new S3rver({ directory: dir, silent: true, configureBuckets: [{ name: bucket, configs: [CORS] }] });
  await s3.configureBuckets();
  const store = (s3 as unknown as { store: Store }).store;
  const inner = s3.callback();
  const locks = new Map<string, Promise<void>>();
  const requests: S3Request[] = [];
  let preconditionsFailed = 0;

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    // Path-style only: /<bucket>/<key>
    const url = new URL(req.url ?? "/", "http://x");
    const path = decodeURIComponent(url.pathname);
    const [, reqBucket = "", ...rest] = path.split("/");
    const key = rest.join("/");
    const ifNoneMatch = typeof req.headers["if-none-match"] === "string" ? req.headers["if-none-match"] : null;
    res.on("finish", () => requests.push({ method: req.method ?? "", key, ifNoneMatch, status: res.statusCode }));
    options.onRequest?.(req.method ?? "", key);
    // A PutObject (the SDK adds ?x-id=PutObject), not a part, ACL or other sub-resource write.
    const plain = [...url.searchParams.keys()].every((k) => k === "x-id");
    const upload = req.method === "PUT" && key !== "" && plain && !req.headers["x-amz-copy-source"];
    const conditional = upload && ifNoneMatch?.trim() === "*";
    const existed = upload && (await store.existsObject(reqBucket, key));
    if (upload) {
      // Cut short (the client died): S3 stores nothing, so neither does this.
      res.once("close", () => {
        if (!res.writableFinished && !existed) void store.deleteObject(reqBucket, key).catch(() => undefined);
      });
    }
    if (!conditional) {
      inner(req, res);
      return;
    }
    // One conditional write per key at a time: the check and the write cannot interleave.
    const lockKey = `${reqBucket}/${key}`;
    const before = locks.get(lockKey) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((ok) => (release = ok));
    const chain = before.then(() => mine);
    locks.set(lockKey, chain);
    await before;
    try {
      if (await store.existsObject(reqBucket, key)) {
        preconditionsFailed++;
        req.resume();
        res.writeHead(412, { "Content-Type": "application/xml", "Content-Length": Buffer.byteLength(PRECONDITION_FAILED), "x-amz-error-code": "PreconditionFailed" });
        res.end(PRECONDITION_FAILED);
        return;
      }
      await new Promise<void>((done) => {
        res.once("close", done);
        inner(req, res);
      });
    } finally {
      release();
      if (locks.get(lockKey) === chain) locks.delete(lockKey);
    }
  };
  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(options.port ?? 0, "127.0.0.1", () => ok());
  });
  const { port } = server.address() as AddressInfo;
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    bucket,
    dir,
    requests,
    get preconditionsFailed() {
      return preconditionsFailed;
    },
    async age(key, ms) {
      const t = new Date(Date.now() - ms);
      await utimes(store.getResourcePath(bucket, key, "object"), t, t);
    },
    env: () => ({
      SANDGLASS_S3_ENDPOINT: endpoint,
      AWS_ACCESS_KEY_ID: S3_TEST_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: S3_TEST_CREDENTIALS.secretAccessKey,
      AWS_REGION: S3_TEST_REGION,
    }),
    close: async () => {
      await new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      });
      if (own) await rm(dir, { recursive: true, force: true });
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "4569" },
      dir: { type: "string", default: "build/s3-dev" },
      bucket: { type: "string", default: "sandglass" },
    },
  });
  const s3 = await startS3TestServer({ port: Number(values.port), dir: values.dir, bucket: values.bucket });
  console.log(`S3 test server at ${s3.endpoint}, bucket "${s3.bucket}", objects in ${s3.dir} (Ctrl+C to stop)`);
  console.log(Object.entries(s3.env()).map(([k, v]) => `${k}=${v}`).join(" "));
  const stop = () => void s3.close().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
