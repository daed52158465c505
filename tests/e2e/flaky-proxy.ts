/**
 * A loopback HTTP proxy in front of the test server that can fail the way networks do: go down
 * (connections refused, open ones cut) and come back on the same port, add latency, or answer
 * 404 for some paths. The page is pointed at the proxy; the server behind it never changes.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export interface FlakyProxy {
  url: string;
  /** Refuses connections and cuts the open ones until up(). */
  down(): Promise<void>;
  up(): Promise<void>;
  /** Delays every request whose path matches by `ms` (0: none). */
  delay(ms: number, match?: (path: string) => boolean): void;
  /** Answers 404 for paths that match (null: none). */
  missing(match: ((path: string) => boolean) | null): void;
  /** Requests passed on so far, by path. */
  paths: string[];
  close(): Promise<void>;
}

export async function startFlakyProxy(target: string): Promise<FlakyProxy> {
  const to = new URL(target);
  const sockets = new Set<Socket>();
  let latency = 0;
  let slow: (path: string) => boolean = () => true;
  let gone: ((path: string) => boolean) | null = null;
  const paths: string[] = [];

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? "/";
    const forward = () => {
      if (gone?.(path)) {
        res.writeHead(404, { "Content-Type": "text/plain", "Access-Control-Allow-Origin": "*" }).end("not here\n");
        return;
      }
      paths.push(path);
      const upstream = request(
        { host: to.hostname, port: to.port, path, method: req.method, headers: { ...req.headers, host: to.host } },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      upstream.on("error", () => res.destroy());
      req.pipe(upstream);
    };
    if (latency > 0 && slow(path)) setTimeout(forward, latency);
    else forward();
  };

  let server: Server = createServer(handle);
  const listen = (port: number) =>
    new Promise<void>((ok, fail) => {
      server.once("error", fail);
      server.listen(port, "127.0.0.1", () => ok());
    });
  const track = (s: Server) =>
    s.on("connection", (socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
    });
  track(server);
  await listen(0);
  const port = (server.address() as AddressInfo).port;

  const stop = () =>
    new Promise<void>((ok) => {
      for (const s of sockets) s.destroy();
      server.close(() => ok());
    });

  return {
    url: `http://127.0.0.1:${port}/`,
    paths,
    down: stop,
    async up() {
      server = track(createServer(handle));
      await listen(port);
    },
    delay(ms, match = () => true) {
      latency = ms;
      slow = match;
    },
    missing(match) {
      gone = match;
    },
    close: async () => {
      if (server.listening) await stop();
    },
  };
}
