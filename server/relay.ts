/**
 * The optional network relay for guests (`tsx server/main.ts --wisp`): a wisp server
 * (@mercuryworkshop/wisp-js) on the same port at /wisp/, so a guest gets full TCP, not only the
 * HTTP that the browser's fetch can carry. The app learns of it from /config.json.
 *
 * Who may be reached: public addresses and this machine's loopback (a developer's local
 * services: the guest reaches them at its router address, see src/vm/network.ts). Private
 * network ranges stay closed, so a page cannot use the relay to scan the LAN.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { logging, server as wisp } from "@mercuryworkshop/wisp-js/server";

export const RELAY_PATH = "/wisp/";

export function attachRelay(server: Server): void {
  wisp.options.allow_loopback_ips = true;
  wisp.options.allow_private_ips = false;
  logging.set_level(logging.WARN);
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if ((req.url ?? "").startsWith(RELAY_PATH)) wisp.routeRequest(req, socket, head);
    else socket.destroy();
  });
}

/** `/config.json` for a server with the relay: the wisp URL as the page reaches this server. */
export function sendRelayConfig(req: IncomingMessage, res: ServerResponse): void {
  const secure = (req.headers["x-forwarded-proto"] ?? "") === "https";
  const body = JSON.stringify({ relay: `${secure ? "wisps" : "wisp"}://${req.headers.host ?? "127.0.0.1"}${RELAY_PATH}` }) + "\n";
  res.writeHead(200, { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-cache", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}
