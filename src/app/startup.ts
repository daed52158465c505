/**
 * The first thing the page runs, before the UI's code has even loaded: reads the route, starts the
 * disk worker opening the machine, and starts the emulator's downloads. Opening a link is a race
 * between fetching the machine's state and starting the emulator; both begin here, and the
 * Session picks them up when the UI mounts.
 */
import { DiskBridge } from "../bridge/disk-bridge.ts";
import type { MachineInfo } from "../engine/disk-service.ts";
import { preloadEmulator, type EmulatorFiles } from "../vm/machine.ts";
import { chooseRelay } from "./relay.ts";
import { chosenPatience } from "./repo-patience.ts";
import { parseRoute, publishUrl, repositoryUrl, type Route } from "./route.ts";

export interface Startup {
  route: Route;
  repo: string;
  /** Where publishing uploads this repository's snapshots (route.ts publishUrl). */
  publish: string;
  bridge: DiskBridge;
  /** The worker opening the machine the route names. */
  opening: Promise<MachineInfo>;
  /** The emulator's code, WebAssembly and BIOS images. */
  files: Promise<EmulatorFiles>;
  /** The guest network's backend (see relay.ts). */
  relay: Promise<string>;
}

export type StartupResult = Startup | { route: { kind: "invalid"; reason: string } };

export function beginStartup(): StartupResult {
  const route = parseRoute(location.hash);
  if (route.kind === "invalid") return { route };
  const repo = repositoryUrl();
  const bridge = new DiskBridge();
  // Before the open: calls reach the worker in order, and the open's disk takes the setting.
  const patience = chosenPatience();
  if (patience !== null) void bridge.api.setRepositoryPatience(patience);
  const opening = bridge.api.open(
    route.kind === "machine"
      ? { machineId: route.id }
      : route.kind === "snapshot"
        ? { repo, kind: "snapshot", name: route.id }
        : { repo, kind: "image", name: route.name, fresh: route.fresh ?? false },
  );
  const files = preloadEmulator(new URL("bios/seabios.bin", repo).href, new URL("bios/vgabios.bin", repo).href);
  // Both are awaited (and their failures shown) by the Session.
  opening.catch(() => undefined);
  files.catch(() => undefined);
  return { route, repo, publish: publishUrl(), bridge, opening, files, relay: chooseRelay() };
}
