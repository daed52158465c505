/** Cutting a machine state into published pieces (src/engine/snapshot.ts). */
import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { splitState } from "../../src/engine/checkpoint-format.ts";
import { groupState } from "../../src/engine/snapshot.ts";
import { MAX_CHUNK_BYTES } from "../../src/engine/repo-format.ts";

describe("groupState", () => {
  const state = new Uint8Array(randomBytes(24 * 1024 * 1024));

  it("cuts the same pieces whether it hashes the pages itself or is given their hashes", async () => {
    const hashes = splitState(state).map((p) => createHash("sha256").update(p).digest("hex"));
    const hashed = await groupState(state);
    const given = await groupState(state, hashes);
    expect(given.map((g) => g.byteLength)).toEqual(hashed.map((g) => g.byteLength));
    expect(Buffer.concat(given).equals(state)).toBe(true);
  });

  it("keeps every piece within what the repository accepts", async () => {
    for (const piece of await groupState(state)) expect(piece.byteLength).toBeLessThanOrEqual(MAX_CHUNK_BYTES);
  });
});
