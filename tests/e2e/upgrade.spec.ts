/**
 * A browser that kept machines in an older store layout (store-format.ts, version 2: one record
 * per block version) opens them with this version: the store is migrated in place and the guest
 * reads exactly what was written, through real Chromium IndexedDB.
 */
import { createHash } from "node:crypto";
import { expect, run, test, waitForShell } from "./fixtures.ts";

const BLOCK = 4096;
/** Inside partition 1 (FAT), past the files the bootloader reads: the guest never touches it. */
const FIRST_BLOCK = (24 * 1024 * 1024) / BLOCK;

test("machines stored by an older Sandglass open, migrated, with every write in place", async ({ page, repo }) => {
  // What the old layout holds: write 1 put 8 blocks of a pattern, write 2 zeroed the second one.
  const pattern = Array.from({ length: 8 * BLOCK }, (_, i) => (i * 7 + (i >> 12)) & 0xff || 1);
  const expected = Buffer.from(pattern);
  expected.fill(0, BLOCK, 2 * BLOCK);
  const md5 = createHash("md5").update(expected).digest("hex");
  const id = "0b5f3c9e-7d2a-4e61-9a8b-2c4d6e8f0a1b";

  // Any page of the app's origin, before the app has opened its database.
  await page.goto(`${repo.url}repo/`);
  await page.evaluate(
    ({ id, repoUrl, pattern, first, block }) =>
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
          tx.objectStore("machines").put(
            { id, name: "kept from before", source: { repo: repoUrl, kind: "image", name: "plain" }, created: now, opened: now, lastSeq: 2, lastBranch: 0, now: { branch: 0, seq: 2 } },
            id,
          );
          tx.objectStore("branches").put({ machine: id, id: 0, parent: null, forkSeq: 0, head: 2, created: now }, [id, 0]);
          tx.objectStore("log").put({ machine: id, seq: 1, branch: 0, time: now, offset: first * block, length: 8 * block, firstBlock: first, blockCount: 8 }, [id, 1]);
          tx.objectStore("log").put({ machine: id, seq: 2, branch: 0, time: now, offset: (first + 1) * block, length: block, firstBlock: first + 1, blockCount: 1 }, [id, 2]);
          const bytes = new Uint8Array(pattern);
          for (let i = 0; i < 8; i++) tx.objectStore("blocks").put(bytes.slice(i * block, (i + 1) * block), [id, first + i, 0, 1]);
          tx.objectStore("blocks").put(new Uint8Array(0), [id, first + 1, 0, 2]);
          tx.oncomplete = () => {
            db.close();
            resolve();
          };
          tx.onerror = () => reject(tx.error);
        };
      }),
    { id, repoUrl: `${repo.url}repo/`, pattern, first: FIRST_BLOCK, block: BLOCK },
  );

  await page.goto(`${repo.url}#/m/${id}`);
  await waitForShell(page);
  await expect(page.getByTestId("machine-name")).toContainText("kept from before");
  await run(page, `dd if=/dev/sda bs=${BLOCK} skip=${FIRST_BLOCK} count=8 2>/dev/null | md5sum | sed 's/^/old-/'`, `old-${md5}`);
  const stores = await page.evaluate(
    () =>
      new Promise<string[]>((resolve) => {
        const open = indexedDB.open("sandglass");
        open.onsuccess = () => {
          resolve([...open.result.objectStoreNames]);
          open.result.close();
        };
      }),
  );
  expect(stores).toContain("groups");
  expect(stores).not.toContain("blocks");
  expect(stores).not.toContain("statePieces");
});
