/**
 * Profiling the disk worker from a bench (opt-in: BENCH_PROFILE=1 in file-diff-page.ts): attaches
 * to the page's dedicated disk worker over the DevTools protocol, counts what the worker asks of
 * IndexedDB, the network and SubtleCrypto (by wrapping their prototypes in the worker: no engine
 * change), records a CPU profile around a call, and summarises where the worker's time went.
 *
 * Playwright's CDP sessions attach to pages, not workers, so the worker is reached through the
 * page session's Target domain (auto-attach, messages relayed with Target.sendMessageToTarget).
 */
import { writeFile } from "node:fs/promises";
import type { CDPSession, Page } from "playwright-core";

/** Sampling interval of the CPU profile (µs): fine enough for a ~500 ms diff. */
const SAMPLING_US = 100;

export interface WorkerSession {
  send<T = unknown>(method: string, params?: object): Promise<T>;
  detach(): Promise<void>;
}

/** A protocol session on the page's dedicated worker whose URL contains `urlPart`. */
export async function attachWorker(page: Page, urlPart: string): Promise<WorkerSession> {
  const cdp: CDPSession = await page.context().newCDPSession(page);
  let sessionId: string | undefined;
  let nextId = 1;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const attached = new Promise<void>((resolve) => {
    cdp.on("Target.attachedToTarget", (e: { sessionId: string; targetInfo: { type: string; url: string } }) => {
      if (e.targetInfo.type === "worker" && e.targetInfo.url.includes(urlPart) && !sessionId) {
        sessionId = e.sessionId;
        resolve();
      }
    });
  });
  cdp.on("Target.receivedMessageFromTarget", (e: { sessionId: string; message: string }) => {
    if (e.sessionId !== sessionId) return;
    const msg = JSON.parse(e.message) as { id?: number; result?: unknown; error?: { message: string } };
    const w = msg.id === undefined ? undefined : waiting.get(msg.id);
    if (!w) return;
    waiting.delete(msg.id!);
    if (msg.error) w.reject(new Error(msg.error.message));
    else w.resolve(msg.result);
  });
  await cdp.send("Target.setAutoAttach", { autoAttach: true, waitForDebuggerOnStart: false, flatten: false });
  await Promise.race([attached, new Promise((_, reject) => setTimeout(() => reject(new Error(`no worker matching ${urlPart}`)), 10_000))]);
  return {
    send<T>(method: string, params: object = {}) {
      const id = nextId++;
      return new Promise<T>((resolve, reject) => {
        waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
        void cdp.send("Target.sendMessageToTarget", { sessionId: sessionId!, message: JSON.stringify({ id, method, params }) }).catch(reject);
      });
    },
    async detach() {
      await cdp.detach().catch(() => undefined);
    },
  };
}

/**
 * Wraps IndexedDB requests (by store and kind: get, cursor, getAll…), transactions, fetch and
 * crypto.subtle.digest in the worker, counting calls and the time from request to answer (summed;
 * answers may overlap). Idempotent; `reset` zeroes the counters.
 */
const INSTRUMENT = `(() => {
  const g = self;
  if (!g.__h14) {
    const c = (g.__h14 = { ops: {}, tx: 0, txStores: {}, log: [], stacks: false });
    Error.stackTraceLimit = 60;
    const stackOf = () => " " + (new Error().stack ?? "").split(String.fromCharCode(10)).slice(2).map((l) => l.trim().replace(/^at (async )?/, "").split(" ")[0]).filter((l) => !/^(new|Promise[.]|proto|wrap|get|getRef|load|loadCold|<anonymous>)$/.test(l)).slice(0, 14).join(" < ");
    const note = (key, started, extra) => {
      const o = (c.ops[key] ??= { n: 0, ms: 0 });
      const now = performance.now();
      o.n++;
      o.ms += now - started;
      c.log.push([key, Math.round(started * 10) / 10, Math.round(now * 10) / 10, extra ?? ""]);
    };
    const wrapReq = (proto, name) => {
      const orig = proto[name];
      proto[name] = function (...args) {
        const started = performance.now();
        const req = orig.apply(this, args);
        const store = this.name ?? (this.objectStore && this.objectStore.name) ?? "?";
        // Where a chunk read comes from (async stack frames of the engine, when BENCH_STACKS=1).
        const from = c.stacks && store === "chunks" && name === "get" ? stackOf() : "";
        let first = true;
        const done = () => { if (first) { first = false; note("idb " + store + " " + name, started, (name === "get" && req.result === undefined ? "miss" : "") + from); } };
        req.addEventListener("success", done);
        req.addEventListener("error", done);
        return req;
      };
    };
    for (const n of ["get", "getAll", "getAllKeys", "getKey", "openCursor", "openKeyCursor", "put", "count"]) wrapReq(IDBObjectStore.prototype, n);
    const tx = IDBDatabase.prototype.transaction;
    IDBDatabase.prototype.transaction = function (stores, mode) {
      c.tx++;
      const k = String(stores) + " " + (mode ?? "readonly");
      c.txStores[k] = (c.txStores[k] ?? 0) + 1;
      return tx.call(this, stores, mode);
    };
    const f = g.fetch;
    g.fetch = function (...args) {
      const started = performance.now();
      const url = String(args[0] && args[0].url ? args[0].url : args[0]);
      const kind = url.includes("/chunks/") ? "fetch chunk" : "fetch other";
      return f.apply(this, args).then(async (r) => { note(kind, started, url.split("/chunks/").pop().slice(0, 12)); return r; });
    };
    const d = crypto.subtle.digest.bind(crypto.subtle);
    crypto.subtle.digest = function (...args) {
      const started = performance.now();
      return d(...args).then((v) => { note("sha256", started); return v; });
    };
  }
  return true;
})()`;

export interface Counters {
  ops: Record<string, { n: number; ms: number }>;
  /** Every request: kind, start and end (the worker's performance.now(), ms), a detail. */
  log: [string, number, number, string][];
  tx: number;
  txStores: Record<string, number>;
}

export async function instrument(w: WorkerSession, stacks = false): Promise<void> {
  await w.send("Runtime.evaluate", { expression: INSTRUMENT, returnByValue: true });
  await w.send("Runtime.evaluate", { expression: `self.__h14.stacks = ${stacks}`, returnByValue: true });
}

/** The worker's clock now (to place the logged requests on the diff's timeline). */
export async function workerNow(w: WorkerSession): Promise<number> {
  const r = await w.send<{ result: { value: number } }>("Runtime.evaluate", { expression: "performance.now()", returnByValue: true });
  return r.result.value;
}

export async function counters(w: WorkerSession, reset = false): Promise<Counters> {
  const r = await w.send<{ result: { value: Counters } }>("Runtime.evaluate", {
    expression: `(() => { const c = self.__h14; const v = JSON.parse(JSON.stringify(c)); if (${reset}) { c.ops = {}; c.tx = 0; c.txStores = {}; c.log = []; } return v; })()`,
    returnByValue: true,
  });
  return r.result.value;
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Runs `fn` with the worker's CPU profiled; writes the profile to `file`. */
export async function profileAround<T>(w: WorkerSession, file: string, fn: () => Promise<T>): Promise<{ result: T; profile: CpuProfile }> {
  await w.send("Profiler.enable");
  await w.send("Profiler.setSamplingInterval", { interval: SAMPLING_US });
  await w.send("Profiler.start");
  const result = await fn();
  const { profile } = await w.send<{ profile: CpuProfile }>("Profiler.stop");
  await w.send("Profiler.disable");
  await writeFile(file, JSON.stringify(profile));
  return { result, profile };
}

/** Where a function's source is, shortened to the engine's module name when it is ours. */
function where(frame: ProfileNode["callFrame"]): string {
  const url = frame.url.replace(/^.*\/assets\//, "");
  return url ? `${url}:${frame.lineNumber + 1}` : "";
}

/**
 * A summary of a profile: self time per function (top `top`), and per category: idle (the worker
 * waiting: IndexedDB, network, crypto, the page), garbage collection, the engine's own code, the
 * rest (idb wrapper, Comlink, structured clone show under their callers' native frames).
 */
export function summarize(profile: CpuProfile, top = 25): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000));
  const total = (profile.endTime - profile.startTime) / 1000;
  const byFn = new Map<string, number>();
  const byCat = new Map<string, number>();
  // Category by the nearest frame with a name we know (stack walked up from the sampled node).
  const category = (id: number): string => {
    const n = byId.get(id)!;
    const name = n.callFrame.functionName;
    if (name === "(idle)") return "idle (awaiting IndexedDB, network, crypto, the page)";
    if (name === "(garbage collector)") return "garbage collection";
    if (name === "(program)") return "(program: native work outside JS)";
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const f = byId.get(at)!.callFrame;
      const fn = f.functionName;
      if (/^(parseInode|parseEntries|parseGroupDesc|parseSuperblock|decodeName|extentMap|indirectMap|computeMap|listDir|inodes|groupInodes|replayJournal)$/.test(fn)) return "ext4 parsing";
      if (/^(blocks|run|block|raw)$/.test(fn) && /BlockReader|block-device/.test(f.url + fn)) return "BlockReader (cache, copies)";
      if (/ByteLru|^(get|set|has)$/.test(fn) && /lru/.test(f.url)) return "LRUs";
      if (/readAtCached|readNow|blockContent|groupVersion|changedBlocks|blockAt/.test(fn)) return "Disk reads (index, overlay, copies)";
      if (/sha256|digest|gunzip|inflate/i.test(fn)) return "hashing / inflating chunks";
      if (/equalBytes|differingRanges|Intervals|settle|has$/.test(fn)) return "diff logic";
    }
    return "other JS (idb wrapper, Comlink, promises, diff logic)";
  };
  for (const [id, ms] of self) {
    const f = byId.get(id)!.callFrame;
    const key = `${f.functionName || "(anonymous)"} ${where(f)}`;
    byFn.set(key, (byFn.get(key) ?? 0) + ms);
    const cat = category(id);
    byCat.set(cat, (byCat.get(cat) ?? 0) + ms);
  }
  const lines: string[] = [];
  lines.push(`profile: ${total.toFixed(0)} ms, ${profile.samples.length} samples`);
  lines.push("by category (self time):");
  for (const [k, v] of [...byCat].sort((x, y) => y[1] - x[1])) lines.push(`  ${v.toFixed(1).padStart(8)} ms  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
  lines.push(`top ${top} functions (self time):`);
  for (const [k, v] of [...byFn].sort((x, y) => y[1] - x[1]).slice(0, top)) lines.push(`  ${v.toFixed(1).padStart(8)} ms  ${k}`);
  return lines.join("\n");
}

/** The counters as lines: calls and summed wait per kind, transactions. */
export function formatCounters(c: Counters): string {
  const lines = [`IndexedDB transactions: ${c.tx} (${Object.entries(c.txStores).map(([k, n]) => `${k}: ${n}`).join(", ")})`];
  for (const [k, v] of Object.entries(c.ops).sort((x, y) => y[1].ms - x[1].ms)) {
    lines.push(`  ${k.padEnd(40)} ${String(v.n).padStart(5)} calls, ${v.ms.toFixed(0).padStart(6)} ms summed (${(v.ms / v.n).toFixed(2)} ms each)`);
  }
  return lines.join("\n");
}
