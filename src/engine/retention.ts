/**
 * Which points of a machine's history a retention rule keeps. Pure: no storage, no clock of its
 * own (callers pass `now`), so the rule can be tested over any history and shown to the person.
 *
 * A rule is a list of tiers: points younger than the first tier's `after` are all kept; a point
 * older than a tier's `after` (and younger than the next tier's) is kept only if it is the newest
 * of its bucket: `every` milliseconds of wall time, aligned to the epoch so a bucket keeps the
 * same point from one thinning to the next. Buckets are per branch (two branches are two
 * histories). In a bucket a checkpoint wins over a quiet point: it resumes the whole machine.
 *
 * Whatever the rule, these are never removed: bookmarks, checkpoints the person made or named,
 * checkpoints published as links, the point the machine is at and the checkpoint it resumes from,
 * every branch's tip (its head and newest checkpoint), and the points branches fork from.
 */
import type { BranchRecord, CheckpointRecord, MarkerRecord, Point } from "./store-format.ts";

export interface RetentionTier {
  /** Age (ms) from which this tier applies. */
  after: number;
  /** Keep one point per this many ms (per branch). */
  every: number;
}

export interface RetentionRule {
  /** Ordered by `after`, ascending. Empty: keep everything. */
  tiers: RetentionTier[];
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/**
 * Every point of the last 10 minutes, one a minute for the hour, one per 10 minutes for the day,
 * one a day after that. A busy guest checkpoints every 5 s (~1 MiB each): an hour keeps ~170
 * points instead of 720, a day ~310, a week ~320.
 */
export const DEFAULT_RULE: RetentionRule = {
  tiers: [
    { after: 10 * MINUTE, every: MINUTE },
    { after: HOUR, every: 10 * MINUTE },
    { after: DAY, every: DAY },
  ],
};

/** Refuses rules that would make no sense to a person (or loop): a clear message each. */
export function checkRule(rule: RetentionRule): RetentionRule {
  let previous = 0;
  for (const t of rule.tiers) {
    if (!Number.isFinite(t.after) || !Number.isFinite(t.every) || t.after < 0 || t.every < 1000) {
      throw new Error("A retention tier needs an age of 0 or more and keeps at most one point per second.");
    }
    if (t.after < previous) throw new Error("Retention tiers must go from younger to older points.");
    previous = t.after;
  }
  return { tiers: rule.tiers.map((t) => ({ after: t.after, every: t.every })) };
}

/** What thinning removes: checkpoint ids and marker keys ([seq, id]). */
export interface ThinningPlan {
  checkpoints: string[];
  markers: MarkerRecord[];
}

interface Candidate {
  branch: number;
  seq: number;
  time: number;
  checkpoint?: CheckpointRecord;
  marker?: MarkerRecord;
}

/** True for checkpoints a person made, named or published: kept whatever the rule says. */
export function isPersonalCheckpoint(c: CheckpointRecord): boolean {
  return !c.auto || c.name !== undefined || (c.published?.length ?? 0) > 0;
}

/**
 * The points a rule removes from a history at time `now`. `resume` is the checkpoint the machine
 * would resume from (kept); `now` is also where the machine's disk is.
 */
export function planThinning(input: {
  rule: RetentionRule;
  time: number;
  at: Point;
  branches: readonly BranchRecord[];
  checkpoints: readonly CheckpointRecord[];
  markers: readonly MarkerRecord[];
  resume?: string | null;
}): ThinningPlan {
  const { rule, time, at, branches, checkpoints, markers } = input;
  const tiers = [...rule.tiers].sort((a, b) => a.after - b.after);
  if (tiers.length === 0) return { checkpoints: [], markers: [] };
  // Protected seqs per branch: tips and fork points, and where the machine is.
  const protectedSeq = new Set<string>();
  const protect = (branch: number, seq: number) => protectedSeq.add(`${branch}:${seq}`);
  for (const b of branches) {
    protect(b.id, b.head);
    if (b.parent !== null) protect(b.parent, b.forkSeq);
  }
  protect(at.branch, at.seq);
  // The newest checkpoint of every branch is its "switch to" target: kept.
  const newestOfBranch = new Map<number, CheckpointRecord>();
  for (const c of checkpoints) {
    const kept = newestOfBranch.get(c.branch);
    if (!kept || c.time > kept.time) newestOfBranch.set(c.branch, c);
  }
  const keptIds = new Set<string>([...newestOfBranch.values()].map((c) => c.id));
  if (input.resume) keptIds.add(input.resume);

  const candidates: Candidate[] = [];
  for (const c of checkpoints) {
    if (keptIds.has(c.id) || isPersonalCheckpoint(c)) continue;
    candidates.push({ branch: c.branch, seq: c.seq, time: c.time, checkpoint: c });
  }
  for (const m of markers) {
    if (m.kind !== "quiet") continue; // bookmarks (and legacy checkpoint markers) stay
    candidates.push({ branch: m.branch, seq: m.seq, time: m.time, marker: m });
  }
  // Bucket every candidate; the winner of each bucket stays.
  const winners = new Map<string, Candidate>();
  const bucketOf = (c: Candidate): string | null => {
    const age = time - c.time;
    let tier: RetentionTier | undefined;
    for (const t of tiers) if (age >= t.after) tier = t;
    if (!tier) return null; // young: kept
    return `${c.branch}:${tier.every}:${Math.floor(c.time / tier.every)}`;
  };
  const better = (a: Candidate, b: Candidate) => {
    // A checkpoint beats a quiet point; then the newer one.
    if (!!a.checkpoint !== !!b.checkpoint) return a.checkpoint ? a : b;
    return a.time >= b.time ? a : b;
  };
  for (const c of candidates) {
    const bucket = bucketOf(c);
    if (bucket === null) continue;
    const kept = winners.get(bucket);
    winners.set(bucket, kept ? better(kept, c) : c);
  }
  const plan: ThinningPlan = { checkpoints: [], markers: [] };
  const keptCandidates = new Set(winners.values());
  for (const c of candidates) {
    const bucket = bucketOf(c);
    if (bucket === null || keptCandidates.has(c)) continue;
    // A quiet point at a tip, a fork or where the machine is would free nothing (that disk
    // version stays readable anyway) and keeps the spot clickable.
    if (c.marker && protectedSeq.has(`${c.branch}:${c.seq}`)) continue;
    if (c.checkpoint) plan.checkpoints.push(c.checkpoint.id);
    else plan.markers.push(c.marker!);
  }
  return plan;
}

/**
 * The seqs of each branch whose disk must stay readable once `plan` is applied: the remaining
 * checkpoints and markers, the branch tips and fork points, and where the machine is.
 */
export function keptSeqs(input: {
  at: Point;
  branches: readonly BranchRecord[];
  checkpoints: readonly Pick<CheckpointRecord, "branch" | "seq">[];
  markers: readonly Pick<MarkerRecord, "branch" | "seq">[];
}): Map<number, number[]> {
  const kept = new Map<number, Set<number>>();
  const add = (branch: number, seq: number) => {
    let set = kept.get(branch);
    if (!set) kept.set(branch, (set = new Set()));
    set.add(seq);
  };
  for (const b of input.branches) {
    add(b.id, b.head);
    if (b.parent !== null) add(b.parent, b.forkSeq);
  }
  add(input.at.branch, input.at.seq);
  for (const c of input.checkpoints) add(c.branch, c.seq);
  for (const m of input.markers) add(m.branch, m.seq);
  return new Map([...kept].map(([b, s]) => [b, [...s].sort((x, y) => x - y)]));
}
