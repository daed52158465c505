/**
 * A web server on 127.0.0.1 that hosts disk images the way the web does, for opening images from
 * a URL: on its own port (so another origin than the app: CORS matters), with HTTP Range, ETag
 * and Last-Modified. Each file can be served without CORS or without Range, to check the page
 * names the cause, and replaced, to check a changed file is refused. Counts the bytes it sends.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import type { AddressInfo } from "node:net";

export interface HostedFile {
  /** The file on disk served under the name. */
  path: string;
  /** Send CORS headers (default true). */
  cors?: boolean;
  /** Answer Range requests with 206 (default true); else the whole file, as some servers do. */
  range?: boolean;
}

export interface ImageHost {
  /** The URL of `name` (a path under the server's root). */
  url(name: string): string;
  /** Serves `file` under `name` from now on (replacing what was there: a changed file). */
  put(name: string, file: HostedFile): void;
  /** Bytes of file content sent for `name` so far, and the requests. */
  sent(name: string): { bytes: number; requests: number };
  close(): Promise<void>;
}

const EXPOSED = "Content-Range, Content-Length, ETag, Last-Modified, Accept-Ranges";

export async function startImageHost(): Promise<ImageHost> {
  const files = new Map<string, HostedFile>();
  const counts = new Map<string, { bytes: number; requests: number }>();

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const name = decodeURIComponent(new URL(req.url ?? "/", "http://host").pathname.slice(1));
    const file = files.get(name);
    const cors = file?.cors ?? true;
    if (cors) {
      res.setHeader("Access-Control-Allow-Origin", "*");
      res.setHeader("Access-Control-Expose-Headers", EXPOSED);
    }
    if (req.method === "OPTIONS") {
      if (cors) {
        res.setHeader("Access-Control-Allow-Methods", "GET, HEAD");
        res.setHeader("Access-Control-Allow-Headers", "Range");
      }
      res.writeHead(204).end();
      return;
    }
    if (!file) {
      res.writeHead(404).end("not found");
      return;
    }
    const info = await stat(file.path);
    const count = counts.get(name) ?? { bytes: 0, requests: 0 };
    counts.set(name, count);
    count.requests++;
    res.setHeader("ETag", `"${info.size.toString(16)}-${Math.round(info.mtimeMs).toString(16)}-${info.ino.toString(16)}"`);
    res.setHeader("Last-Modified", info.mtime.toUTCString());
    res.setHeader("Content-Type", "application/octet-stream");
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    let start = 0;
    let end = info.size - 1;
    if (range && (file.range ?? true)) {
      res.setHeader("Accept-Ranges", "bytes");
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), info.size - 1) : info.size - 1;
      if (start >= info.size) {
        res.writeHead(416, { "Content-Range": `bytes */${info.size}` }).end();
        return;
      }
      res.writeHead(206, { "Content-Range": `bytes ${start}-${end}/${info.size}`, "Content-Length": end - start + 1 });
    } else {
      res.writeHead(200, { "Content-Length": info.size });
    }
    if (req.method === "HEAD" || info.size === 0) {
      res.end();
      return;
    }
    const stream = createReadStream(file.path, { start, end });
    stream.on("data", (chunk) => (count.bytes += chunk.length));
    stream.pipe(res);
    res.on("close", () => stream.destroy());
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    });
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: (name) => `http://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    put: (name, file) => void files.set(name, file),
    sent: (name) => ({ ...(counts.get(name) ?? { bytes: 0, requests: 0 }) }),
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}
