/**
 * The timeline is a tree of branches; a point is (branch, seq). These pure functions answer which
 * writes are visible at a point, without touching storage.
 */
import type { BranchRecord, Point } from "./store-format.ts";

/** Writes on `branch` with seq ≤ `maxSeq` are visible. */
export interface Segment {
  branch: number;
  maxSeq: number;
}

/**
 * The branches whose writes make up the disk at `point`, nearest first. Sequence numbers are
 * global per machine, so a parent's writes after the fork have larger seqs and fall outside.
 */
export function ancestry(branches: ReadonlyMap<number, BranchRecord>, point: Point): Segment[] {
  const segments: Segment[] = [];
  let branch = branches.get(point.branch);
  let maxSeq = point.seq;
  if (!branch) throw new Error(`unknown branch ${point.branch}`);
  while (branch) {
    segments.push({ branch: branch.id, maxSeq });
    if (branch.parent === null) break;
    maxSeq = branch.forkSeq;
    const parent = branches.get(branch.parent);
    if (!parent) throw new Error(`branch ${branch.id} names a missing parent ${branch.parent}`);
    branch = parent;
  }
  return segments;
}

/** True when `seq` on `branch` is visible from `point`. */
export function isVisible(branches: ReadonlyMap<number, BranchRecord>, point: Point, branch: number, seq: number): boolean {
  return ancestry(branches, point).some((s) => s.branch === branch && seq <= s.maxSeq);
}
