import { describe, expect, it } from "vitest";
import { UploadLimiter } from "../../server/uploads.ts";

describe("UploadLimiter", () => {
  it("is a rolling hour per publisher", () => {
    let now = 0;
    const l = new UploadLimiter(100, () => now);
    expect(l.retryAfter("a", 60)).toBeNull();
    l.charge("a", 60);
    now = 30 * 60_000;
    l.charge("a", 30);
    expect(l.retryAfter("a", 20)).toBe(30 * 60); // the first 60 expire at minute 60
    expect(l.retryAfter("b", 100)).toBeNull(); // another publisher has its own hour
    now = 60 * 60_000 + 1;
    expect(l.used("a")).toBe(30);
    expect(l.retryAfter("a", 70)).toBeNull();
    expect(l.retryAfter("a", 101)).toBe(3600); // never fits
  });
});
