/**
 * Which checkpoint a reopened machine resumes: the newest at or before "now" on its branch; on a
 * branch with none yet, the checkpoint it forked from (the first write after a rewind forked it and
 * the page was closed before the next checkpoint: the crash suite found a kill in that moment
 * reopening the machine with nothing to resume), but none when the branch began with a cold boot.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { DiskService } from "../../src/engine/disk-service.ts";
import { BLOCK_SIZE } from "../../src/engine/store-format.ts";
import { repositoryOf } from "./repository.ts";
import { page, v86State } from "./v86-state.ts";

const REPO = "http://repo.test/repo/";

/** A DiskService on database `db` whose repository serves a 256 KiB image "disk" of one chunk. */
function service(db: string): DiskService {
  const image = new Uint8Array(256 * 1024).map((_, i) => (i * 7) & 0xff);
  return new DiskService({ fetch: repositoryOf(image, image.byteLength, "disk").fetchFn, dbName: db });
}

const block = (fill: number) => new Uint8Array(BLOCK_SIZE).fill(fill);
let seed = 0;
const save = async (s: DiskService) => s.saveCheckpoint(await s.pointNow(), v86State([page(++seed)]), { auto: false });

/** A machine on database `db` with two checkpoints, `a` after a first write and `b` after a second. */
async function twoCheckpoints(db: string) {
  const s = service(db);
  await s.open({ repo: REPO, kind: "image", name: "disk" });
  await s.write(0, block(1));
  const a = await save(s);
  await s.write(BLOCK_SIZE, block(2));
  const b = await save(s);
  return { s, a, b };
}

describe("the checkpoint a reopened machine resumes", () => {
  it("is the one rewound to when the first write after the rewind forked a branch with no checkpoint yet", async () => {
    const { s: first, a, b } = await twoCheckpoints("resume-fork");
    await first.write(2 * BLOCK_SIZE, block(3));
    await first.restoreCheckpoint(a.id);
    await first.write(3 * BLOCK_SIZE, block(4)); // forks: "now" is on a new branch
    await first.flush();
    expect((await first.pointNow()).branch).not.toBe(a.branch);

    const reopened = await service("resume-fork").open({ repo: REPO, kind: "image", name: "disk" });
    expect(reopened.resume?.id).toBe(a.id);
    expect(reopened.resume?.id).not.toBe(b.id);
  });

  it("prefers the latest point on the path over a later-taken checkpoint further back", async () => {
    const { s, a: early, b: late } = await twoCheckpoints("resume-path");
    // Back to the early point, a second checkpoint there (no write: still the same branch), then
    // back to the late one: the machine stands at `late`, whose disk is the newer one.
    await s.restoreCheckpoint(early.id);
    const again = await save(s);
    expect(again.time).toBeGreaterThanOrEqual(late.time);
    await s.restoreCheckpoint(late.id);
    await s.flush();
    const reopened = await service("resume-path").open({ repo: REPO, kind: "image", name: "disk" });
    expect(reopened.resume?.id).toBe(late.id);
  });

  it("is none when the branch began with a cold boot after a disk-only rewind (no checkpoint's memory is on it)", async () => {
    const s = service("resume-cold");
    await s.open({ repo: REPO, kind: "image", name: "disk" });
    await s.write(0, block(1));
    await save(s);
    await s.write(BLOCK_SIZE, block(2));
    const mark = await s.bookmark("before the mistake");
    await s.write(2 * BLOCK_SIZE, block(3));
    await s.seekDisk({ branch: mark.branch, seq: mark.seq }); // the page cold-boots here
    await s.write(3 * BLOCK_SIZE, block(4)); // the boot's first write forks
    await s.flush();
    expect((await s.pointNow()).branch).not.toBe(mark.branch);
    const reopened = await service("resume-cold").open({ repo: REPO, kind: "image", name: "disk" });
    expect(reopened.resume).toBeNull();
  });
});
