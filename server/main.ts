/**
 * `npm start`'s server: the built app and the image repository on 127.0.0.1.
 *   tsx server/main.ts --repo build/repo --app dist [--port 8080] [--host 127.0.0.1] [--no-uploads]
 *     [--upload-mib-per-hour N] [--wisp] [--store s3://bucket/prefix] [--cors-origin URL]
 * --store (or SANDGLASS_STORE) keeps the repository in an S3-compatible bucket instead of the
 * --repo folder (server/store.ts: endpoint SANDGLASS_S3_ENDPOINT, region AWS_REGION, credentials
 * from the AWS variables); such a server holds no state, and any number of copies may serve one bucket.
 * Snapshot uploads are on unless --no-uploads; SANDGLASS_UPLOAD_TOKEN makes them need that token;
 * --upload-mib-per-hour (or SANDGLASS_UPLOAD_MIB_PER_HOUR) caps what one publisher stores per hour
 * through this copy. --cors-origin (or SANDGLASS_CORS_ORIGIN) lets an app on that origin read and
 * publish here. --wisp (or SANDGLASS_WISP=1) also runs the guests' TCP relay (server/relay.ts).
 */
import { existsSync } from "node:fs";
import { parseArgs } from "node:util";
import { startServer } from "./repo-server.ts";
import { openStore } from "./store.ts";

const { values } = parseArgs({
  options: {
    repo: { type: "string", default: "build/repo" },
    app: { type: "string", default: "dist" },
    port: { type: "string", default: "8080" },
    host: { type: "string", default: "127.0.0.1" },
    store: { type: "string", default: process.env.SANDGLASS_STORE ?? "" },
    "cors-origin": { type: "string", default: process.env.SANDGLASS_CORS_ORIGIN ?? "" },
    "no-uploads": { type: "boolean", default: false },
    "upload-mib-per-hour": { type: "string" },
    wisp: { type: "boolean", default: process.env.SANDGLASS_WISP === "1" },
  },
});

const inBucket = values.store.startsWith("s3://");
for (const [what, dir] of [["repository", inBucket ? null : values.store || values.repo], ["app", values.app]] as const) {
  if (dir !== null && !existsSync(dir)) {
    console.error(`sandglass: the ${what} folder "${dir}" does not exist (run \`npm start\`, which builds it).`);
    process.exit(1);
  }
}

let store;
try {
  store = openStore(values.store || values.repo);
} catch (err) {
  console.error(`sandglass: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
if (inBucket) {
  // Fail at start, not at the first visitor: the bucket must answer with these credentials.
  await store.list("images").catch((err: unknown) => {
    console.error(`sandglass: cannot list ${store.location}: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}

const server = await startServer({
  store,
  appRoot: values.app,
  port: Number(values.port),
  host: values.host,
  ...(values["cors-origin"] ? { corsOrigin: values["cors-origin"] } : {}),
  uploads: !values["no-uploads"],
  ...(values["upload-mib-per-hour"] ? { uploadBytesPerHour: Number(values["upload-mib-per-hour"]) * 1024 * 1024 } : {}),
  relay: values.wisp,
}).catch(
  (err: unknown) => {
    console.error(`sandglass: could not listen on ${values.host}:${values.port}: ${String(err)}`);
    process.exit(1);
  },
);
console.log(
  `Sandglass is running at ${server.url}  (Ctrl+C to stop); repository: ${store.location}${values.wisp ? "; TCP relay for guests at /wisp/" : ""}`,
);
const stop = () => void server.close().then(() => process.exit(0));
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
