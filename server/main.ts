/**
 * `npm start`'s server: the built app and the image repository on 127.0.0.1.
 *   tsx server/main.ts --repo build/repo --app dist [--port 8080] [--no-uploads] [--upload-mib-per-hour N] [--wisp]
 * Snapshot uploads are on unless --no-uploads; SANDGLASS_UPLOAD_TOKEN makes them need that token;
 * --upload-mib-per-hour (or SANDGLASS_UPLOAD_MIB_PER_HOUR) caps what one publisher stores per hour.
 * --wisp (or SANDGLASS_WISP=1) also runs the guests' TCP relay (server/relay.ts).
 */
import { existsSync } from "node:fs";
import { parseArgs } from "node:util";
import { startServer } from "./repo-server.ts";

const { values } = parseArgs({
  options: {
    repo: { type: "string", default: "build/repo" },
    app: { type: "string", default: "dist" },
    port: { type: "string", default: "8080" },
    "no-uploads": { type: "boolean", default: false },
    "upload-mib-per-hour": { type: "string" },
    wisp: { type: "boolean", default: process.env.SANDGLASS_WISP === "1" },
  },
});

for (const [what, dir] of [["repository", values.repo], ["app", values.app]] as const) {
  if (!existsSync(dir)) {
    console.error(`sandglass: the ${what} folder "${dir}" does not exist (run \`npm start\`, which builds it).`);
    process.exit(1);
  }
}

const server = await startServer({
  repoRoot: values.repo,
  appRoot: values.app,
  port: Number(values.port),
  uploads: !values["no-uploads"],
  ...(values["upload-mib-per-hour"] ? { uploadBytesPerHour: Number(values["upload-mib-per-hour"]) * 1024 * 1024 } : {}),
  relay: values.wisp,
}).catch(
  (err: unknown) => {
    console.error(`sandglass: could not listen on 127.0.0.1:${values.port}: ${String(err)}`);
    process.exit(1);
  },
);
console.log(`Sandglass is running at ${server.url}  (Ctrl+C to stop)${values.wisp ? "; TCP relay for guests at /wisp/" : ""}`);
const stop = () => void server.close().then(() => process.exit(0));
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
