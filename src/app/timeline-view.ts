/**
 * Turns the worker's timeline into what the timeline UI draws: the points of the current history
 * (checkpoints, bookmarks, quiet points), and one lane per branch. Pure functions, no Svelte.
 */
import type { CheckpointSummary, Timeline } from "../engine/disk-service.ts";
import type { BranchRecord, MarkerRecord, Point } from "../engine/store-format.ts";
import { ancestry } from "../engine/timeline.ts";

export type TimelinePoint =
  | { kind: "checkpoint"; key: string; time: number; point: Point; checkpoint: CheckpointSummary }
  | { kind: "bookmark" | "quiet"; key: string; time: number; point: Point; marker: MarkerRecord };

export interface Lane {
  branch: BranchRecord;
  /** True for the branch "now" is on. */
  current: boolean;
  /** True for the branches "now" descends from (and its own): they cannot be deleted. */
  onPath: boolean;
  /** Points of this branch, at most one per pixel column (the newest), for drawing. */
  points: TimelinePoint[];
  /** Newest checkpoint of the branch: where "switch to this branch" goes. */
  newestCheckpoint: CheckpointSummary | undefined;
  start: number;
  end: number;
}

function toPoints(timeline: Timeline): TimelinePoint[] {
  const points: TimelinePoint[] = timeline.checkpoints.map((c) => ({
    kind: "checkpoint",
    key: `c:${c.id}`,
    time: c.time,
    point: { branch: c.branch, seq: c.seq },
    checkpoint: c,
  }));
  for (const m of timeline.markers) {
    if (m.kind === "checkpoint") continue;
    points.push({ kind: m.kind, key: `m:${m.id}`, time: m.time, point: { branch: m.branch, seq: m.seq }, marker: m });
  }
  return points.sort((a, b) => a.time - b.time);
}

/** The points that are part of the disk "now" sees: the current branch and its ancestors up to the forks. */
export function historyPoints(timeline: Timeline): TimelinePoint[] {
  const branches = new Map(timeline.branches.map((b) => [b.id, b]));
  const segments = ancestry(branches, timeline.now);
  return toPoints(timeline).filter((p) => segments.some((s) => s.branch === p.point.branch && p.point.seq <= s.maxSeq));
}

/** One lane per branch, with points thinned to one per `columns`-th of the time range. */
export function lanes(timeline: Timeline, columns: number): { lanes: Lane[]; start: number; end: number } {
  const all = toPoints(timeline);
  const times = [...all.map((p) => p.time), ...timeline.branches.map((b) => b.created), ...timeline.activity.map((a) => a.time)];
  const path = new Set(ancestry(new Map(timeline.branches.map((b) => [b.id, b])), timeline.now).map((s) => s.branch));
  const start = Math.min(...times);
  const end = Math.max(...times, start + 1);
  const result = timeline.branches
    .slice()
    .sort((a, b) => a.id - b.id)
    .map((branch) => {
      const own = all.filter((p) => p.point.branch === branch.id);
      const byColumn = new Map<number, TimelinePoint>();
      for (const p of own) {
        const column = Math.floor(((p.time - start) / (end - start)) * columns);
        const kept = byColumn.get(column);
        // Checkpoints win a shared column: they are the points a person can resume.
        if (!kept || p.kind === "checkpoint" || kept.kind !== "checkpoint") byColumn.set(column, p);
      }
      const checkpoints = own.filter((p) => p.kind === "checkpoint");
      const newest = checkpoints[checkpoints.length - 1];
      const times = own.map((p) => p.time);
      return {
        branch,
        current: branch.id === timeline.now.branch,
        onPath: path.has(branch.id),
        points: [...byColumn.values()],
        newestCheckpoint: newest?.kind === "checkpoint" ? newest.checkpoint : undefined,
        start: Math.min(branch.created, ...times),
        end: Math.max(branch.created, ...times),
      };
    });
  return { lanes: result, start, end };
}

/** True when `p` is exactly where the machine is now. */
export function isNow(timeline: Timeline, p: TimelinePoint): boolean {
  return p.point.branch === timeline.now.branch && p.point.seq === timeline.now.seq;
}
