// The parts of @mercuryworkshop/wisp-js's server entry point that server/relay.ts uses (the
// package ships no type declarations).
declare module "@mercuryworkshop/wisp-js/server" {
  import type { IncomingMessage } from "node:http";
  import type { Duplex } from "node:stream";
  export const server: {
    routeRequest(req: IncomingMessage, socket: Duplex, head: Buffer): void;
    options: { allow_loopback_ips: boolean; allow_private_ips: boolean; [key: string]: unknown };
  };
  export const logging: { WARN: number; set_level(level: number): void };
}
