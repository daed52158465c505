/**
 * Which kills the crash-kill suite makes, from a seed: the scenarios in a shuffled order and, for
 * each kill, the fraction of the operation's measured duration after which the browser dies, and
 * every other choice the suite makes (which checkpoint to rewind to, what to sample). The same
 * seed makes the same choices in the same order; see crash.spec.ts.
 */

/** What the browser is doing when it is killed. */
export const SCENARIOS = ["dd", "checkpoint", "rewind", "switch", "publish", "import", "migration", "discard"] as const;
export type Scenario = (typeof SCENARIOS)[number];

/** The seed `npm test` uses: its short sample is the same every run. */
export const SHORT_SEED = 20261203;

/** mulberry32: a tiny seeded PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Seeded choices, all drawn from one stream in the order the suite asks for them. */
export class Choices {
  private readonly next: () => number;

  constructor(readonly seed: number) {
    this.next = mulberry32(seed);
  }

  /** An independent stream for one part of the run (one kill's round), so its choices do not shift with the others'. */
  derive(part: number): Choices {
    return new Choices((Math.imul(this.seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(part, 0xc2b2ae35)) >>> 0);
  }

  /** A number in [0, 1). */
  fraction(): number {
    return this.next();
  }

  /** An index in [0, n). */
  index(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Up to `n` items of `list`, picked without repeats, in list order. */
  sample<T>(list: readonly T[], n: number): T[] {
    if (list.length <= n) return [...list];
    const picked = new Set<number>();
    while (picked.size < n) picked.add(this.index(list.length));
    return [...picked].sort((a, b) => a - b).map((i) => list[i]!);
  }

  /** A new array with `list`'s items in a seeded order (Fisher-Yates). */
  shuffle<T>(list: readonly T[]): T[] {
    const out = [...list];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.index(i + 1);
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
}

/** One kill: where, and at which fraction of the operation's measured duration. */
export interface Kill {
  n: number;
  scenario: Scenario;
  fraction: number;
}

/**
 * `kills` kills spread evenly over the scenarios (each one at least once when kills ≥ 8), in an
 * order shuffled by the seed, each with its seeded fraction.
 */
export function planKills(choices: Choices, kills: number): Kill[] {
  const scenarios: Scenario[] = [];
  for (let i = 0; i < kills; i++) scenarios.push(SCENARIOS[i % SCENARIOS.length]!);
  return choices.shuffle(scenarios).map((scenario, i) => ({ n: i + 1, scenario, fraction: choices.fraction() }));
}
