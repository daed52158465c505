/**
 * Thinning a machine's history and deleting branches: removes the points asked for, then
 * everything no remaining point refers to (a mark-and-sweep over the machine's records; the
 * layout and what "refers" means are in store-format.ts, "Thinning"). Everything one sweep
 * deletes or rewrites is committed in one IndexedDB transaction, so a crash leaves the history
 * as it was before or as it is after, and a sweep that finds garbage left by anything else
 * (a crash between two writes of some older version) deletes it too.
 */
import { decodeRefs, deflatePack, encodeRefs, PackBuilder, packFrom, unpack, type Place } from "./checkpoint-format.ts";
import { placeKey, type Checkpoints, type CheckpointSweep } from "./checkpoints.ts";
import type { Disk } from "./disk.ts";
import type { DataRecord, GroupVersion, LocalStore } from "./local-store.ts";
import { keptSeqs, type ThinningPlan } from "./retention.ts";
import { BLOCK_SIZE, DATA_RECORD_BLOCKS, entryOf, GROUP_BLOCKS, ZERO_PART, type CheckpointRecord, type MarkerRecord, type StatePack } from "./store-format.ts";
import { concatBytes } from "./util.ts";

export interface SweepOptions {
  /** Points to remove (retention.ts planThinning); none for a plain sweep. */
  plan?: ThinningPlan;
  /** Branches to delete with everything on them (the caller adds their descendants). */
  dropBranches?: ReadonlySet<number>;
  /**
   * A data record or pack whose live share is at most this is rewritten with its live part only
   * (0.5: half dead). 1 compacts anything with a dead byte (tests: nothing unreachable stays).
   */
  compactBelow?: number;
  /** Most bytes read for compaction in one sweep (it holds the disk meanwhile). */
  compactBytes?: number;
}

export interface SweepResult {
  checkpoints: number;
  markers: number;
  branches: number;
  /** Index records (`groups`) and log records deleted. */
  groups: number;
  log: number;
  /** Data records and packs deleted (compacted ones included), and their bytes. */
  dataRecords: number;
  packs: number;
  /** Bytes freed: deleted data and packs, less what compaction wrote again. */
  freedBytes: number;
  /** Bytes rewritten by compaction (data, packs), and how many data records and packs it rewrote. */
  compactedBytes: number;
  compactedRecords: number;
  compactedPacks: number;
  ms: number;
}

const DEFAULT_COMPACT_BELOW = 0.5;
const DEFAULT_COMPACT_BYTES = 32 * 1024 * 1024;
/** Roughly what one `groups` or `log` record costs in IndexedDB (key, value, overhead). */
export const INDEX_RECORD_BYTES = { groups: 3 * 4 * GROUP_BLOCKS + 64, log: 160, marker: 200 };

type GroupKey = [string, number, number, number];

/**
 * Removes `options.plan`'s points and `options.dropBranches`, and everything that only they
 * needed. Runs with the machine's disk and checkpoints held (see Disk.exclusive and
 * Checkpoints.exclusive): the guest's disk requests wait for it.
 */
export function sweepHistory(store: LocalStore, disk: Disk, checkpoints: Checkpoints, options: SweepOptions = {}): Promise<SweepResult> {
  const started = Date.now();
  const machine = disk.id;
  const compactBelow = options.compactBelow ?? DEFAULT_COMPACT_BELOW;
  let compactBudget = options.compactBytes ?? DEFAULT_COMPACT_BYTES;
  const dropped = options.dropBranches ?? new Set<number>();
  const plan = options.plan ?? { checkpoints: [], markers: [] };

  return checkpoints.exclusive(({ records, nextPack }) =>
    disk.exclusive(async (view) => {
      const markers = await store.listMarkers(machine);
      const removedCheckpoints = new Set(plan.checkpoints);
      const removedMarkers = new Set(plan.markers.map((m) => m.id));
      const branches = view.branches.filter((b) => !dropped.has(b.id));
      const keptCheckpoints = records.filter((c) => !removedCheckpoints.has(c.id) && !dropped.has(c.branch));
      const keptMarkers = markers.filter((m) => !removedMarkers.has(m.id) && !dropped.has(m.branch));
      const goneCheckpoints = records.filter((c) => !keptCheckpoints.includes(c)).map((c) => c.id);
      const goneMarkers: MarkerRecord[] = markers.filter((m) => !keptMarkers.includes(m));
      const kept = keptSeqs({ at: view.record().now, branches, checkpoints: keptCheckpoints, markers: keptMarkers });

      // ── the disk index: for each group and branch, the newest version at or before each kept seq
      const byGroupBranch = new Map<string, GroupKey[]>();
      for (const key of await store.groupKeys(machine)) {
        const id = `${key[1]}:${key[2]}`;
        let list = byGroupBranch.get(id);
        if (!list) byGroupBranch.set(id, (list = []));
        list.push(key);
      }
      const deleteGroups: GroupKey[] = [];
      const keepGroups: GroupKey[] = [];
      for (const list of byGroupBranch.values()) {
        list.sort((a, b) => a[3] - b[3]);
        const branch = list[0]![2];
        const seqs = dropped.has(branch) ? [] : (kept.get(branch) ?? []);
        let k = 0;
        for (let i = 0; i < list.length; i++) {
          const seq = list[i]![3];
          const next = i + 1 < list.length ? list[i + 1]![3] : Infinity;
          while (k < seqs.length && seqs[k]! < seq) k++;
          // Kept when some kept seq reads this version: seq ≤ kept < the next version's seq.
          if (k < seqs.length && seqs[k]! < next) keepGroups.push(list[i]!);
          else deleteGroups.push(list[i]!);
        }
      }
      const versionedSeqs = new Set(keepGroups.map((k) => k[3]));
      const deleteLog = (await store.logSeqs(machine)).filter((seq) => !versionedSeqs.has(seq));

      // ── write data: live blocks are those a kept version names
      const values = await store.groupValues(keepGroups);
      const live = new Map<string, Set<number>>();
      values.forEach((entries) => {
        for (let at = 0; at < entries.length; at += 3) {
          const [seq, part, index] = [entries[at]!, entries[at + 1]!, entries[at + 2]!];
          if (seq === 0 || part === ZERO_PART) continue;
          const key = `${seq} ${part}`;
          let set = live.get(key);
          if (!set) live.set(key, (set = new Set()));
          set.add(index);
        }
      });
      const deleteData: [number, number][] = [];
      const compactData: { key: [number, number]; live: number[] }[] = [];
      let freedBytes = 0;
      let compactedBytes = 0;
      for (const [key, bytes] of await store.dataSizes(machine)) {
        const [seq, part] = key.split(" ").map(Number) as [number, number];
        const used = live.get(key);
        if (!used) {
          deleteData.push([seq, part]);
          freedBytes += bytes;
        } else if (used.size * BLOCK_SIZE <= compactBelow * bytes && used.size * BLOCK_SIZE < bytes && compactBudget >= bytes) {
          compactBudget -= bytes;
          compactData.push({ key: [seq, part], live: [...used].sort((a, b) => a - b) });
          freedBytes += bytes;
        }
      }
      const putData: DataRecord[] = [];
      const putGroups: GroupVersion[] = [];
      if (compactData.length) {
        const contents = await store.dataRecords(machine, compactData.map((c) => c.key));
        const seq = view.takeSeq();
        const moved = new Map<string, [number, number, number]>();
        let blocks: Uint8Array[] = [];
        const close = () => {
          if (!blocks.length) return;
          const bytes = concatBytes(blocks);
          putData.push({ seq, part: putData.length, bytes });
          freedBytes -= bytes.byteLength;
          compactedBytes += bytes.byteLength;
          blocks = [];
        };
        compactData.forEach(({ key: [oldSeq, oldPart], live: indexes }, i) => {
          for (const index of indexes) {
            if (blocks.length >= DATA_RECORD_BLOCKS) close();
            moved.set(`${oldSeq} ${oldPart} ${index}`, [seq, putData.length, blocks.length]);
            blocks.push(contents[i]!.subarray(index * BLOCK_SIZE, (index + 1) * BLOCK_SIZE));
          }
          deleteData.push([oldSeq, oldPart]);
        });
        close();
        // Every kept version naming a moved block names its new place.
        keepGroups.forEach((key, i) => {
          const entries = values[i]!;
          let copy: Uint32Array | undefined;
          for (let block = 0; block < GROUP_BLOCKS; block++) {
            const at = entryOf(block);
            const to = moved.get(`${entries[at]} ${entries[at + 1]} ${entries[at + 2]}`);
            if (!to) continue;
            copy ??= entries.slice();
            copy.set(to, at);
          }
          if (copy) putGroups.push({ group: key[1], branch: key[2], seq: key[3], entries: copy });
        });
      }

      // ── checkpoint packs: live pieces are those a kept checkpoint names
      const refsOf = new Map<string, Uint32Array>(keptCheckpoints.map((c) => [c.id, decodeRefs(c.refs)]));
      const livePieces = new Map<number, Set<number>>();
      for (const refs of refsOf.values()) {
        for (let i = 0; i < refs.length; i += 2) {
          let set = livePieces.get(refs[i]!);
          if (!set) livePieces.set(refs[i]!, (set = new Set()));
          set.add(refs[i + 1]!);
        }
      }
      const deletePacks: number[] = [];
      const dead = new Set<string>();
      const compactPacks: number[] = [];
      const infos = await store.packInfos(machine);
      for (const [pack, info] of infos) {
        const used = livePieces.get(pack);
        if (!used) {
          deletePacks.push(pack);
          freedBytes += info.bytes;
          for (let i = 0; i < info.pieces; i++) dead.add(placeKey([pack, i]));
        } else if (used.size <= compactBelow * info.pieces && used.size < info.pieces && compactBudget >= info.bytes) {
          compactBudget -= info.bytes;
          compactPacks.push(pack);
          freedBytes += info.bytes;
        }
      }
      const moved = new Map<string, Place>();
      const putPacks: [number, StatePack][] = [];
      let packAfter = nextPack;
      if (compactPacks.length) {
        const builder = new PackBuilder(nextPack, (n, list) => putPacks.push([n, packFrom(list)]));
        for (const [pack, stored] of await store.statePacks(machine, compactPacks)) {
          const used = livePieces.get(pack)!;
          unpack(stored).forEach((piece, index) => {
            const key = placeKey([pack, index]);
            if (used.has(index)) moved.set(key, builder.add(piece));
            else dead.add(key);
          });
          deletePacks.push(pack);
        }
        packAfter = builder.close();
        for (const entry of putPacks) {
          entry[1] = await deflatePack(entry[1]);
          freedBytes -= entry[1].bytes.byteLength;
          compactedBytes += entry[1].bytes.byteLength;
        }
      }
      const putCheckpoints: CheckpointRecord[] = [];
      if (moved.size) {
        for (const c of keptCheckpoints) {
          const refs = refsOf.get(c.id)!;
          let changed = false;
          for (let i = 0; i < refs.length; i += 2) {
            const to = moved.get(placeKey([refs[i]!, refs[i + 1]!]));
            if (!to) continue;
            refs.set(to, i);
            changed = true;
          }
          if (changed) putCheckpoints.push({ ...c, refs: encodeRefs(refs) });
        }
      }

      const droppedIds = view.branches.filter((b) => dropped.has(b.id)).map((b) => b.id);
      await store.commitSweep(machine, {
        deleteGroups,
        putGroups,
        deleteLog,
        deleteData,
        putData,
        deleteMarkers: goneMarkers,
        deleteCheckpoints: goneCheckpoints,
        putCheckpoints,
        deletePacks,
        putPacks,
        deleteBranches: droppedIds,
        machine: view.record(),
      });
      view.dropBranches(droppedIds);
      freedBytes +=
        deleteGroups.length * INDEX_RECORD_BYTES.groups + deleteLog.length * INDEX_RECORD_BYTES.log + goneMarkers.length * INDEX_RECORD_BYTES.marker;
      const result: SweepResult = {
        checkpoints: goneCheckpoints.length,
        markers: goneMarkers.length,
        branches: droppedIds.length,
        groups: deleteGroups.length,
        log: deleteLog.length,
        dataRecords: deleteData.length,
        packs: deletePacks.length,
        freedBytes,
        compactedBytes,
        compactedRecords: compactData.length,
        compactedPacks: compactPacks.length,
        ms: Date.now() - started,
      };
      const applied: CheckpointSweep = { deleted: goneCheckpoints, rewritten: putCheckpoints, moved, dead, nextPack: packAfter };
      return { result, applied };
    }),
  );
}
