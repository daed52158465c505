/** Cutting a machine state into published pieces (src/engine/snapshot.ts). */
import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { splitState } from "../../src/engine/checkpoint-format.ts";
import { groupState } from "../../src/engine/snapshot.ts";
import { MAX_CHUNK_BYTES, STATE_PIECE_BYTES } from "../../src/engine/repo-format.ts";

describe("groupState", () => {
  const state = new Uint8Array(randomBytes(24 * 1024 * 1024));

  it("ends a piece after each page whose SHA-256 starts with a multiple of the pages per piece", async () => {
    const pages = splitState(state);
    const perPiece = STATE_PIECE_BYTES / 4096;
    const expected: number[] = [];
    let at = 0;
    let start = 0;
    for (const page of pages) {
      if (at + page.byteLength - start > 3 * STATE_PIECE_BYTES) expected.push((start = at));
      at += page.byteLength;
      if (createHash("sha256").update(page).digest().readUInt32BE(0) % perPiece === 0) expected.push((start = at));
    }
    const groups = await groupState(state);
    const ends: number[] = [];
    groups.reduce((end, g) => (ends.push(end + g.byteLength), end + g.byteLength), 0);
    expect(ends).toEqual(expected.at(-1) === state.byteLength ? expected : [...expected, state.byteLength]);
    expect(Buffer.concat(groups).equals(state)).toBe(true);
  });

  it("keeps every piece within what the repository accepts", async () => {
    for (const piece of await groupState(state)) expect(piece.byteLength).toBeLessThanOrEqual(MAX_CHUNK_BYTES);
  });
});
