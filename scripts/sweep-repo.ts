/**
 * `npm run repo:sweep -- [--repo build/repo | --store s3://bucket/prefix] [--delete] [--grace-minutes 60]`:
 * lists (or with --delete, removes) chunks no manifest references. A dry run unless --delete.
 * --store (or $SANDGLASS_STORE) names a bucket as the server takes it (server/store.ts).
 */
import { parseArgs } from "node:util";
import { openStore } from "../server/store.ts";
import { DEFAULT_GRACE_MS, sweepRepository } from "../server/sweep.ts";
import { describe, formatBytes } from "../src/app/format.ts";

const { values } = parseArgs({
  options: {
    repo: { type: "string" },
    store: { type: "string" },
    delete: { type: "boolean", default: false },
    "grace-minutes": { type: "string", default: String(DEFAULT_GRACE_MS / 60000) },
  },
});
const graceMinutes = Number(values["grace-minutes"]);
if (!Number.isFinite(graceMinutes) || graceMinutes < 0) {
  console.error("sweep: --grace-minutes must be a number ≥ 0");
  process.exit(2);
}
try {
  const store = openStore(values.store ?? values.repo ?? process.env.SANDGLASS_STORE ?? "build/repo");
  const r = await sweepRepository({ store, delete: values.delete, graceMs: graceMinutes * 60000 });
  for (const o of r.orphans) console.log(`${r.deleted ? "deleted" : "would delete"} ${o.file} (${o.bytes} bytes)`);
  console.log(
    `${r.manifests} manifests reference ${r.referenced} chunks; ${r.orphans.length} unreferenced files (${formatBytes(r.bytes)}) ` +
      `${r.deleted ? "deleted" : "would be deleted (dry run: add --delete)"}; ${r.recent} unreferenced but touched in the last ${graceMinutes} min kept` +
      (r.leasesDropped > 0 ? `; ${r.leasesDropped} expired leases deleted` : ""),
  );
} catch (err) {
  console.error(`sweep: ${describe(err)}`);
  process.exit(1);
}
