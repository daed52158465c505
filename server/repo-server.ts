/**
 * The repository server: the built app at `/` and an image repository folder at `/repo/`
 * (format: src/engine/repo-format.ts). Plain static files with the headers that make them cheap:
 * chunks are immutable (named by content hash), manifests revalidate by ETag, raw images answer
 * HTTP range requests. Snapshot uploads are verified in uploads.ts. The same handler runs inside
 * Vite's dev server.
 */
import { createReadStream, type Stats } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, resolve, sep } from "node:path";
import { attachRelay, sendRelayConfig } from "./relay.ts";
import { handleUpload, type UploadOptions } from "./uploads.ts";

export interface RequestRecord {
  method: string;
  path: string;
  status: number;
  /** Body bytes sent. */
  bytes: number;
}

export interface RepoServerOptions extends UploadOptions {
  /** The repository folder served at /repo/. */
  repoRoot: string;
  /** The built app (Vite's dist/), served at /; omitted inside Vite's dev server. */
  appRoot?: string;
  onRequest?: (record: RequestRecord) => void;
  /** Run the guests' network relay at /wisp/ and announce it in /config.json (relay.ts). */
  relay?: boolean;
}

export type Next = (err?: unknown) => void;
export type Handler = (req: IncomingMessage, res: ServerResponse, next?: Next) => void;

const REPO_PREFIX = "/repo/";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".wasm": "application/wasm",
  ".map": "application/json; charset=utf-8",
  // Compressed chunks are opaque files the client gunzips itself (their hash is of the
  // uncompressed bytes), so they are never sent with Content-Encoding.
  ".gz": "application/gzip",
  ".bin": "application/octet-stream",
  ".img": "application/octet-stream",
};

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

/** Parses a single `bytes=` range; null for none/unsupported, "invalid" when unsatisfiable. */
function parseRange(header: string | undefined, size: number): { start: number; end: number } | null | "invalid" {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null; // multi-range or other units: answer with the whole file, as allowed
  const [, a, b] = m;
  let start: number;
  let end: number;
  if (a === "" && b === "") return "invalid";
  if (a === "") {
    start = Math.max(0, size - Number(b));
    end = size - 1;
  } else {
    start = Number(a);
    end = b === "" ? size - 1 : Math.min(Number(b), size - 1);
  }
  if (start > end || start >= size) return "invalid";
  return { start, end };
}

/** Sends one file with caching headers, conditional GET and range support. */
async function sendFile(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  s: Stats,
  cacheControl: string,
  gzipChunk = false,
): Promise<void> {
  const etag = etagOf(s);
  const headers: Record<string, string | number> = {
    "Content-Type": TYPES[extname(path)] ?? "application/octet-stream",
    "Cache-Control": cacheControl,
    ETag: etag,
    "Last-Modified": s.mtime.toUTCString(),
    "Accept-Ranges": "bytes",
  };
  // A gzip'd chunk goes out as gzip-encoded content when the client takes that: a browser then
  // inflates it natively, off the disk worker's thread. Readers handle either (chunk-source.ts).
  if (gzipChunk && !req.headers.range && /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""))) {
    headers["Content-Type"] = "application/octet-stream";
    headers["Content-Encoding"] = "gzip";
  }
  if (gzipChunk) headers.Vary = "Accept-Encoding";
  if (req.headers["if-none-match"] === etag) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  const range = parseRange(req.headers.range, s.size);
  if (range === "invalid") {
    sendError(res, 416, `Range not satisfiable for a file of ${s.size} bytes`, { "Content-Range": `bytes */${s.size}` });
    return;
  }
  const start = range ? range.start : 0;
  const end = range ? range.end : s.size - 1;
  headers["Content-Length"] = s.size === 0 ? 0 : end - start + 1;
  if (range) headers["Content-Range"] = `bytes ${start}-${end}/${s.size}`;
  res.writeHead(range ? 206 : 200, headers);
  if (req.method === "HEAD" || s.size === 0) {
    res.end();
    return;
  }
  await new Promise<void>((done) => {
    const stream = createReadStream(path, { start, end });
    stream.on("error", () => {
      res.destroy();
      done();
    });
    stream.on("end", done);
    stream.pipe(res);
  });
}

function repoCacheControl(relPath: string): string {
  // Chunks are named by their content: they can never change.
  if (relPath.startsWith("chunks/")) return "public, max-age=31536000, immutable";
  // Manifests and BIOS files may be re-imported: always revalidate (cheap with ETags).
  return "no-cache";
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
  const repoRoot = resolve(options.repoRoot);
  const appRoot = options.appRoot ? resolve(options.appRoot) : null;

  async function handle(req: IncomingMessage, res: ServerResponse, next?: Next): Promise<void> {
    const url = new URL(`http://localhost${req.url ?? "/"}`);
    const path = url.pathname;
    const isRepo = path.startsWith(REPO_PREFIX) || path === "/repo";
    if (!isRepo && !appRoot) {
      next?.();
      return;
    }
    record(req, res, options.onRequest);
    if (req.method !== "GET" && req.method !== "HEAD") {
      const reply = (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
        sendJson(res, status, { ...body, ...(status >= 400 ? { status } : {}) }, headers);
      if (isRepo && (await handleUpload(req, repoRoot, path.slice(REPO_PREFIX.length), options, reply))) return;
      sendError(res, 405, `${req.method ?? "?"} is not allowed here`, { Allow: "GET, HEAD" });
      return;
    }
    if (isRepo) {
      const rel = path.slice(REPO_PREFIX.length);
      const file = safeJoin(repoRoot, rel);
      if (!file) {
        sendError(res, 400, "That path is not inside the repository");
        return;
      }
      const s = await fileStats(file);
      if (!s) {
        sendError(res, 404, `Not in the repository: ${rel}`);
        return;
      }
      // "?encoding=identity": the stored bytes as they are (a reader retrying a copy that failed).
      const encode = rel.startsWith("chunks/") && rel.endsWith(".gz") && url.searchParams.get("encoding") !== "identity";
      await sendFile(req, res, file, s, repoCacheControl(rel), encode);
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
      if (!res.headersSent) sendError(res, 500, `Server error: ${String(err)}`);
      else res.destroy();
    });
  };
}

export interface RunningServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Starts the server on 127.0.0.1 (port 0 picks a free one). */
export async function startServer(options: RepoServerOptions & { port?: number }): Promise<RunningServer> {
  const handler = createRepoHandler(options);
  const server = createServer((req, res) => handler(req, res));
  server.keepAliveTimeout = 5_000;
  if (options.relay) attachRelay(server);
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(options.port ?? 0, "127.0.0.1", () => ok());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    port,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}
