/**
 * The shared folder against the real v86 9p file system: files go in and come out byte for byte,
 * a name already taken gets a numbered one, a batch over the limit writes nothing, and the
 * folder's files are in the saved state (so checkpoints and rewinds carry them).
 */
import { describe, expect, it } from "vitest";
import { SHARED_FOLDER_LIMIT, SharedFolder, SharedFolderFullError, type SharedFolderHost } from "../../src/vm/shared-folder.ts";
import { loadedV86 } from "./real-v86.ts";

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

describe("SharedFolder on v86's 9p file system", () => {
  it("puts, lists, reads, renames clashes, refuses an oversized batch whole, and lives in the state", async () => {
    const emulator = await loadedV86(undefined, { filesystem: {} });
    const host = emulator as unknown as SharedFolderHost;
    const folder = new SharedFolder(host);
    expect(folder.available).toBe(true);
    expect(folder.list()).toEqual([]);

    const a = bytes(100_000, 1);
    expect(await folder.put([{ name: "a.bin", data: a }, { name: "we/ird\u0001.txt", data: bytes(10, 2) }])).toEqual(["/a.bin", "/we_ird_.txt"]);
    expect(await folder.put([{ name: "a.bin", data: bytes(5, 3) }])).toEqual(["/a (1).bin"]);
    expect(folder.list().map((f) => [f.path, f.size])).toEqual([
      ["/a (1).bin", 5],
      ["/a.bin", 100_000],
      ["/we_ird_.txt", 10],
    ]);
    expect(await folder.read("/a.bin")).toEqual(a);

    const before = folder.list();
    await expect(folder.put([{ name: "small", data: bytes(10, 4) }, { name: "big", data: new Uint8Array(SHARED_FOLDER_LIMIT) }])).rejects.toBeInstanceOf(
      SharedFolderFullError,
    );
    expect(folder.list()).toEqual(before);
    // The page checks a drop's sizes before reading any of it.
    const used = 100_000 + 10 + 5;
    expect(() => folder.ensureRoom(SHARED_FOLDER_LIMIT - used)).not.toThrow();
    expect(() => folder.ensureRoom(SHARED_FOLDER_LIMIT - used + 1)).toThrow(SharedFolderFullError);

    // Saved and restored with the machine: a file added after the save is gone after the restore.
    // (A state restores only once the BIOS has set the PCI devices up: let it run a moment.)
    await emulator.run();
    await new Promise((r) => setTimeout(r, 300));
    await emulator.stop();
    const state = await emulator.save_state();
    await folder.put([{ name: "later", data: bytes(3, 5) }]);
    await emulator.restore_state(state);
    expect(folder.list().map((f) => f.path)).toEqual(["/a (1).bin", "/a.bin", "/we_ird_.txt"]);
    expect(await folder.read("/a.bin")).toEqual(a);
    await emulator.destroy();
  });
});
