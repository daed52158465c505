/**
 * Direct looks into the page's IndexedDB (store-format.ts), beside what the UI lists: what a
 * machine has in each store, which machines exist, and an older store (version 2) built by hand for
 * the migration kills. Each runs in a page of the app's origin.
 */
import { createHash } from "node:crypto";
import type { Page } from "@playwright/test";

/** A machine's records in each store keyed by it (store-format.ts). */
export type MachineCounts = Record<"machines" | "branches" | "log" | "groups" | "data" | "markers" | "checkpoints" | "statePacks", number>;

/** How many records each store holds for machine `id` (all zero once it is wholly deleted). */
export async function machineCounts(page: Page, id: string): Promise<MachineCounts> {
  return page.evaluate(
    async (id) => {
      const db = await new Promise<IDBDatabase>((ok, fail) => {
        const r = indexedDB.open("sandglass");
        r.onsuccess = () => ok(r.result);
        r.onerror = () => fail(r.error);
      });
      const count = (store: string, key: IDBValidKey | IDBKeyRange) =>
        new Promise<number>((ok, fail) => {
          const r = db.transaction(store).objectStore(store).count(key);
          r.onsuccess = () => ok(r.result);
          r.onerror = () => fail(r.error);
        });
      const range = IDBKeyRange.bound([id], [id, []]);
      const counts = {
        machines: await count("machines", id),
        branches: await count("branches", range),
        log: await count("log", range),
        groups: await count("groups", range),
        data: await count("data", range),
        markers: await count("markers", range),
        checkpoints: await count("checkpoints", range),
        statePacks: await count("statePacks", range),
      };
      db.close();
      return counts;
    },
    id,
  );
}

/**
 * What the database is: its version, its stores, the machines in it, and chunks no manifest names;
 * null when there is none (it is not created: opening a missing one would make an empty version 1
 * that the app would then take for an old store).
 */
export async function storeSummary(page: Page): Promise<{ version: number; stores: string[]; machines: string[]; orphanChunks: number } | null> {
  return page.evaluate(async () => {
    if (!(await indexedDB.databases()).some((d) => d.name === "sandglass")) return null;
    const db = await new Promise<IDBDatabase>((ok, fail) => {
      const r = indexedDB.open("sandglass");
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    const all = <T>(store: string, keys: boolean) =>
      new Promise<T[]>((ok, fail) => {
        const s = db.transaction(store).objectStore(store);
        const r = keys ? s.getAllKeys() : s.getAll();
        r.onsuccess = () => ok(r.result as T[]);
        r.onerror = () => fail(r.error);
      });
    const stores = [...db.objectStoreNames];
    const machines = stores.includes("machines") ? await all<string>("machines", true) : [];
    let orphanChunks = 0;
    if (stores.includes("chunks") && stores.includes("manifests")) {
      type Kept = { manifest: { chunks: (string | null)[]; machine?: { pieces: string[] } } };
      const named = new Set<string>();
      for (const { manifest } of await all<Kept>("manifests", false)) {
        for (const ref of [...manifest.chunks, ...(manifest.machine?.pieces ?? [])]) if (ref) named.add(ref.replace(/\.gz$/, ""));
      }
      orphanChunks = (await all<string>("chunks", true)).filter((hash) => !named.has(hash)).length;
    }
    const summary = { version: db.version, stores, machines, orphanChunks };
    db.close();
    return summary;
  });
}

export const BLOCK = 4096;

/** One write of a version 2 store: `blocks` blocks from `firstBlock`, of a pattern (or zeros). */
export interface LegacyWrite {
  firstBlock: number;
  blocks: number;
  /** Pattern number (0: zeros, stored as an empty value as version 2 did). */
  pattern: number;
}

/** A write's bytes: a pattern that differs per block and per pattern number (the page makes the same). */
function legacyBytes(w: LegacyWrite): Uint8Array {
  const out = new Uint8Array(w.blocks * BLOCK);
  if (w.pattern === 0) return out;
  for (let i = 0; i < out.length; i++) out[i] = ((i * 7 + (i >> 12) * 13 + w.pattern * 29) & 0xff) || 1;
  return out;
}

/** SHA-256 of the region `firstBlock`..+`blocks` after the writes, in order, over a zero disk region. */
export function legacyRegionSha256(writes: LegacyWrite[], firstBlock: number, blocks: number): string {
  const region = new Uint8Array(blocks * BLOCK);
  for (const w of writes) region.set(legacyBytes(w), (w.firstBlock - firstBlock) * BLOCK);
  return createHash("sha256").update(region).digest("hex");
}

/**
 * Writes a version 2 store (store-format.ts: one `blocks` record per block version) holding one
 * machine of `image` whose log is `writes`, from a page of the app's origin before the app has
 * opened its database (as tests/e2e/upgrade.spec.ts does, bigger: the migration takes a while).
 */
export async function writeVersion2Store(page: Page, machine: { id: string; name: string; repo: string; image: string }, writes: LegacyWrite[]): Promise<void> {
  await page.evaluate(
    ({ machine, records, block }) =>
      new Promise<void>((resolve, reject) => {
        const open = indexedDB.open("sandglass", 2);
        open.onupgradeneeded = () => {
          for (const s of ["chunks", "manifests", "machines", "branches", "log", "blocks", "markers", "checkpoints", "statePieces"]) {
            open.result.createObjectStore(s);
          }
        };
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const db = open.result;
          const tx = db.transaction(["machines", "branches", "log", "blocks"], "readwrite");
          const now = Date.now();
          const { id } = machine;
          const last = records.length;
          tx.objectStore("machines").put(
            { id, name: machine.name, source: { repo: machine.repo, kind: "image", name: machine.image }, created: now, opened: now, lastSeq: last, lastBranch: 0, now: { branch: 0, seq: last } },
            id,
          );
          tx.objectStore("branches").put({ machine: id, id: 0, parent: null, forkSeq: 0, head: last, created: now }, [id, 0]);
          records.forEach((w, i) => {
            const seq = i + 1;
            tx.objectStore("log").put(
              { machine: id, seq, branch: 0, time: now, offset: w.firstBlock * block, length: w.blocks * block, firstBlock: w.firstBlock, blockCount: w.blocks },
              [id, seq],
            );
            // legacyBytes(), made here: tens of MiB are not worth sending from the test.
            const bytes = new Uint8Array(w.blocks * block);
            if (w.pattern !== 0) for (let j = 0; j < bytes.length; j++) bytes[j] = ((j * 7 + (j >> 12) * 13 + w.pattern * 29) & 0xff) || 1;
            for (let b = 0; b < w.blocks; b++) {
              const value = w.pattern === 0 ? new Uint8Array(0) : bytes.slice(b * block, (b + 1) * block);
              tx.objectStore("blocks").put(value, [id, w.firstBlock + b, 0, seq]);
            }
          });
          tx.oncomplete = () => {
            db.close();
            resolve();
          };
          tx.onerror = () => reject(tx.error);
        };
      }),
    { machine, records: writes, block: BLOCK },
  );
}
