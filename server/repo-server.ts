/**
 * The repository server: the built app at `/` and an image repository at `/repo/` (format:
 * src/engine/repo-format.ts), kept in a local folder or an S3-compatible bucket (store.ts). Plain
 * static files with the headers that make them cheap: chunks are immutable (named by content hash),
 * manifests revalidate by ETag, raw images answer HTTP range requests. Snapshot uploads are
 * verified in uploads.ts. The same handler runs inside Vite's dev server. With the S3 store the
 * server keeps no state of its own, so any number of copies can serve one bucket.
 */
import { createReadStream, type Stats } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Readable } from "node:stream";
import { extname, join, resolve, sep } from "node:path";
import { attachRelay, sendRelayConfig } from "./relay.ts";
import { LocalStore, StoreError, contentTypeOf, parseRange, repoCacheControl, type ReadResult, type RepoStore } from "./store.ts";
import { handleUpload, type UploadOptions } from "./uploads.ts";

export interface RequestRecord {
  method: string;
  path: string;
  status: number;
  /** Body bytes sent. */
  bytes: number;
}

export interface RepoServerOptions extends UploadOptions {
  /** The repository folder served at /repo/ (when no `store` is given). */
  repoRoot?: string;
  /** Where the repository lives (store.ts); default: the folder `repoRoot`. */
  store?: RepoStore;
  /** Origin allowed to publish and read from another origin (CORS), e.g. https://sandglass.example; "*" for any. */
  corsOrigin?: string;
  /** The built app (Vite's dist/), served at /; omitted inside Vite's dev server. */
  appRoot?: string;
  onRequest?: (record: RequestRecord) => void;
  /** Run the guests' network relay at /wisp/ and announce it in /config.json (relay.ts). */
  relay?: boolean;
}

export type Next = (err?: unknown) => void;
export type Handler = (req: IncomingMessage, res: ServerResponse, next?: Next) => void;

const REPO_PREFIX = "/repo/";


function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body) + "\n";
  res.writeHead(status, {
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
    "Cache-Control": "no-store",
    ...headers,
  });
  res.end(text);
}

export function sendError(res: ServerResponse, status: number, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { error: message, status }, headers);
}

/**
 * Maps a URL path below a root to a file path, or null if it would leave the root (`..`,
 * encoded slashes, NUL bytes) or names a hidden file.
 */
export function safeJoin(root: string, urlPath: string): string | null {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes("\0") || decoded.includes("\\")) return null;
  const parts = decoded.split("/").filter((p) => p !== "");
  if (parts.some((p) => p === ".." || p.startsWith("."))) return null;
  const base = resolve(root);
  const full = resolve(base, ...parts);
  return full === base || full.startsWith(base + sep) ? full : null;
}

async function fileStats(path: string): Promise<Stats | null> {
  try {
    const s = await stat(path);
    return s.isFile() ? s : null;
  } catch {
    return null;
  }
}

function etagOf(s: Stats): string {
  return `"${s.size.toString(16)}-${Math.floor(s.mtimeMs).toString(16)}"`;
}

/** Sends a file of the app folder (see sendRead). */
async function sendFile(req: IncomingMessage, res: ServerResponse, path: string, s: Stats, cacheControl: string): Promise<void> {
  const file = { size: s.size, modified: s.mtime, etag: etagOf(s) };
  let result: ReadResult;
  if (req.headers["if-none-match"] === file.etag) result = { file, notModified: true };
  else {
    const range = parseRange(req.headers.range, s.size);
    const wants = range !== "invalid" && req.method !== "HEAD" && s.size > 0;
    result = { file, range, ...(wants ? { body: createReadStream(path, range ? range : {}) } : {}) };
  }
  await sendRead(req, res, path, result, cacheControl);
}

/** Sends one file as a store read it (store.ts), with caching headers, conditional GET and ranges. */
async function sendRead(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  result: ReadResult,
  cacheControl: string,
  gzipChunk = false,
): Promise<void> {
  const { file } = result;
  const headers: Record<string, string | number> = {
    "Content-Type": contentTypeOf(path),
    "Cache-Control": cacheControl,
    ETag: file.etag,
    ...(file.modified.getTime() > 0 ? { "Last-Modified": file.modified.toUTCString() } : {}),
    "Accept-Ranges": "bytes",
  };
  // A gzip'd chunk goes out as gzip-encoded content when the client takes that: a browser then
  // inflates it natively, off the disk worker's thread. Readers handle either (chunk-source.ts).
  if (gzipChunk && !req.headers.range && /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""))) {
    headers["Content-Type"] = "application/octet-stream";
    headers["Content-Encoding"] = "gzip";
  }
  if (gzipChunk) headers.Vary = res.hasHeader("Vary") ? `${String(res.getHeader("Vary"))}, Accept-Encoding` : "Accept-Encoding";
  if (result.notModified) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  const { range, body } = result;
  if (range === "invalid") {
    sendError(res, 416, `Range not satisfiable for a file of ${file.size} bytes`, { "Content-Range": `bytes */${file.size}` });
    return;
  }
  const start = range ? range.start : 0;
  const end = range ? range.end : file.size - 1;
  headers["Content-Length"] = file.size === 0 ? 0 : end - start + 1;
  if (range) headers["Content-Range"] = `bytes ${start}-${end}/${file.size}`;
  res.writeHead(range ? 206 : 200, headers);
  if (req.method === "HEAD" || file.size === 0 || !body) {
    body?.destroy();
    res.end();
    return;
  }
  await pipeBody(body, res);
}

/** Streams a body to the response; a broken source cuts the response (the client sees it short). */
function pipeBody(body: Readable, res: ServerResponse): Promise<void> {
  return new Promise<void>((done) => {
    body.on("error", () => {
      res.destroy();
      done();
    });
    body.on("end", done);
    res.on("close", () => {
      body.destroy();
      done();
    });
    body.pipe(res);
  });
}

/** Counts the bytes a response sends so tests and benchmarks can see network use. */
function record(req: IncomingMessage, res: ServerResponse, onRequest: RepoServerOptions["onRequest"]): void {
  if (!onRequest) return;
  let bytes = 0;
  const write = res.write.bind(res) as (...args: unknown[]) => boolean;
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
  const count = (chunk: unknown) => {
    if (typeof chunk === "string") bytes += Buffer.byteLength(chunk);
    else if (chunk instanceof Uint8Array) bytes += chunk.byteLength;
  };
  res.write = ((chunk: unknown, ...rest: unknown[]) => {
    count(chunk);
    return write(chunk, ...rest);
  }) as typeof res.write;
  res.end = ((chunk?: unknown, ...rest: unknown[]) => {
    if (typeof chunk !== "function") count(chunk);
    return end(chunk, ...rest);
  }) as typeof res.end;
  const path = (req.url ?? "/").split("?")[0] ?? "/";
  res.on("finish", () => onRequest({ method: req.method ?? "GET", path, status: res.statusCode, bytes }));
}

/**
 * A connect-style handler. Requests outside /repo/ go to the app (when appRoot is set) or to
 * `next` (inside Vite).
 */
export function createRepoHandler(options: RepoServerOptions): Handler {
  const store = options.store ?? new LocalStore(options.repoRoot ?? "build/repo");
  const appRoot = options.appRoot ? resolve(options.appRoot) : null;

  async function handle(req: IncomingMessage, res: ServerResponse, next?: Next): Promise<void> {
    const url = new URL(`http://localhost${req.url ?? "/"}`);
    const path = url.pathname;
    const isRepo = path.startsWith(REPO_PREFIX) || path === "/repo";
    if (!isRepo && !appRoot) {
      // Inside Vite its own handlers answer; a server of the repository alone has nothing else.
      if (next) next();
      else sendError(res, 404, `Not found: ${path} (this server holds only the repository, at ${REPO_PREFIX})`);
      return;
    }
    record(req, res, options.onRequest);
    if (isRepo && options.corsOrigin) {
      // The app on another origin reads and publishes here (README: serving from a bucket or CDN).
      res.setHeader("Access-Control-Allow-Origin", options.corsOrigin);
      res.setHeader("Access-Control-Expose-Headers", "ETag, Content-Length, Content-Range, Retry-After");
      if (options.corsOrigin !== "*") res.setHeader("Vary", "Origin");
      if (req.method === "OPTIONS") {
        res.writeHead(204, {
          "Access-Control-Allow-Methods": "GET, HEAD, PUT, POST",
          "Access-Control-Allow-Headers": "Authorization, Content-Type, Range, If-None-Match",
          "Access-Control-Max-Age": "86400",
        });
        res.end();
        return;
      }
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      const reply = (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
        sendJson(res, status, { ...body, ...(status >= 400 ? { status } : {}) }, headers);
      if (isRepo && (await handleUpload(req, store, path.slice(REPO_PREFIX.length), options, reply))) return;
      sendError(res, 405, `${req.method ?? "?"} is not allowed here`, { Allow: "GET, HEAD" });
      return;
    }
    if (isRepo) {
      const rel = path.slice(REPO_PREFIX.length);
      // The same checks as a folder path (no "..", no hidden names such as S3 leases), then the
      // store is given the decoded repository-relative path.
      const file = safeJoin("/repo", rel);
      if (!file) {
        sendError(res, 400, "That path is not inside the repository");
        return;
      }
      const key = file.slice("/repo/".length);
      const ifNoneMatch = typeof req.headers["if-none-match"] === "string" ? req.headers["if-none-match"] : undefined;
      const result = key === "" ? null : await store.read(key, { head: req.method === "HEAD", ifNoneMatch, range: req.headers.range });
      if (!result) {
        sendError(res, 404, `Not in the repository: ${rel}`);
        return;
      }
      // "?encoding=identity": the stored bytes as they are (a reader retrying a copy that failed).
      const encode = rel.startsWith("chunks/") && rel.endsWith(".gz") && url.searchParams.get("encoding") !== "identity";
      await sendRead(req, res, key, result, repoCacheControl(rel), encode);
      return;
    }
    if (path === "/config.json" && options.relay) {
      sendRelayConfig(req, res);
      return;
    }
    // The app: hashed assets are immutable; anything else revalidates; unknown paths without an
    // extension get index.html (routes live in the hash, but a stray path should not 404).
    const file = safeJoin(appRoot!, path === "/" ? "index.html" : path);
    if (!file) {
      sendError(res, 400, "Bad path");
      return;
    }
    let s = await fileStats(file);
    let target = file;
    if (!s && extname(path) === "") {
      target = join(appRoot!, "index.html");
      s = await fileStats(target);
    }
    if (!s) {
      sendError(res, 404, `Not found: ${path}`);
      return;
    }
    const immutable = path.startsWith("/assets/");
    await sendFile(req, res, target, s, immutable ? "public, max-age=31536000, immutable" : "no-cache");
  }

  return (req, res, next) => {
    handle(req, res, next).catch((err: unknown) => {
      // The storage failing is not this request's fault: 503 says to try again.
      if (!res.headersSent && err instanceof StoreError) sendError(res, 503, err.message, { "Retry-After": "5" });
      else if (!res.headersSent) sendError(res, 500, `Server error: ${String(err)}`);
      else res.destroy();
    });
  };
}

export interface RunningServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Starts the server on 127.0.0.1 (port 0 picks a free one); `host` to listen elsewhere (behind a load balancer). */
export async function startServer(options: RepoServerOptions & { port?: number; host?: string }): Promise<RunningServer> {
  const handler = createRepoHandler(options);
  const server = createServer((req, res) => handler(req, res));
  server.keepAliveTimeout = 5_000;
  if (options.relay) attachRelay(server);
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => ok());
  });
  const { port } = server.address() as AddressInfo;
  const host = options.host ?? "127.0.0.1";
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}/`,
    port,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}
