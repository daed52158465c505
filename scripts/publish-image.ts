/**
 * Pushes built images from a local repository folder to a repository store (an S3-compatible
 * bucket, or another folder):
 *
 *   npm run publish-image -- --to s3://bucket/prefix [--repo build/repo] [--image default] [--image small] [--concurrency 16]
 *
 * Each image's manifest, its booted snapshot (repo-format.ts `booted`), every chunk they reference
 * and the BIOS files. Only what the store lacks is sent (chunks by name: they are immutable; BIOS
 * files and the image manifest by content), many at a time. Every chunk is checked against its
 * hash before it goes up. Order makes it resumable and safe to read meanwhile: chunks, then BIOS
 * files, then the snapshot manifest, then the image manifest, so a reader never finds a manifest
 * whose chunks are missing, and a run killed half-way is finished by running it again (which sends
 * only the rest). The bucket is configured as for the server (server/store.ts: $SANDGLASS_S3_ENDPOINT,
 * $AWS_REGION, the AWS credential variables).
 */
import { createHash } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { gunzipSync } from "node:zlib";
import { describe, formatBytes } from "../src/app/format.ts";
import { chunkHash, chunkPath, isCompressed, manifestPath, parseManifest, referencedChunks, type DiskManifest } from "../src/engine/repo-format.ts";
import { inParallel, openStore, type RepoStore } from "../server/store.ts";

export interface PublishOptions {
  /** The local repository folder (build/repo). */
  from: string;
  to: RepoStore;
  images: string[];
  concurrency?: number;
  log?: (line: string) => void;
}

export interface PublishReport {
  /** Chunk files the images need, those the store had, those sent now, and their bytes. */
  chunks: number;
  present: number;
  uploaded: number;
  bytes: number;
  /** Other files (manifests, BIOS) written now. */
  files: string[];
}

export class PublishError extends Error {}

async function readManifest(from: string, kind: "image" | "snapshot", name: string): Promise<{ manifest: DiskManifest; text: string }> {
  const path = join(from, manifestPath(kind, name));
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    throw new PublishError(`${path} does not exist (is the ${kind} "${name}" built?)`);
  }
  try {
    return { manifest: parseManifest(JSON.parse(text)), text };
  } catch (err) {
    throw new PublishError(`${path} cannot be read: ${describe(err)}`);
  }
}

/** A chunk file's bytes, refused unless its (uncompressed) content hashes to its name. */
async function verifiedChunk(from: string, ref: string): Promise<Buffer> {
  const path = join(from, chunkPath(ref));
  const stored = await readFile(path).catch(() => {
    throw new PublishError(`${path} is missing from the local repository`);
  });
  let content: Buffer;
  try {
    content = isCompressed(ref) ? gunzipSync(stored) : stored;
  } catch {
    throw new PublishError(`${path} is not valid gzip data`);
  }
  if (createHash("sha256").update(content).digest("hex") !== chunkHash(ref)) throw new PublishError(`${path} does not match its hash: the local repository is damaged`);
  return stored;
}

/** Writes a file the store may have in another version (BIOS, image manifest) when its bytes differ. */
async function putIfChanged(to: RepoStore, rel: string, data: Buffer): Promise<boolean> {
  const there = await to.readBytes(rel);
  if (there?.equals(data)) return false;
  await to.put(rel, data);
  return true;
}

export async function publishImages(options: PublishOptions): Promise<PublishReport> {
  const { from, to } = options;
  const log = options.log ?? (() => undefined);
  const concurrency = options.concurrency ?? 16;
  const report: PublishReport = { chunks: 0, present: 0, uploaded: 0, bytes: 0, files: [] };

  const manifests: { kind: "image" | "snapshot"; name: string; text: string; manifest: DiskManifest }[] = [];
  for (const name of options.images) {
    const image = await readManifest(from, "image", name);
    if (image.manifest.booted) manifests.push({ kind: "snapshot", name: image.manifest.booted, ...(await readManifest(from, "snapshot", image.manifest.booted)) });
    manifests.push({ kind: "image", name, ...image });
  }
  const refs = [...new Set(manifests.flatMap((m) => referencedChunks(m.manifest)))];
  report.chunks = refs.length;

  // Which chunks the store lacks, asked one by one (a bucket may hold millions of others).
  const lacking: string[] = [];
  await inParallel(refs, concurrency, async (ref) => {
    if (!(await to.exists(chunkPath(ref)))) lacking.push(ref);
  });
  report.present = refs.length - lacking.length;
  log(`${refs.length} chunks needed, ${report.present} already there, ${lacking.length} to upload`);

  let done = 0;
  const started = Date.now();
  await inParallel(lacking, concurrency, async (ref) => {
    const data = await verifiedChunk(from, ref);
    // false: another writer stored it since the check; it is there all the same.
    if (await to.create(chunkPath(ref), data)) {
      report.uploaded++;
      report.bytes += data.length;
    } else report.present++;
    if (++done % 500 === 0) log(`  ${done}/${lacking.length} chunks (${formatBytes(report.bytes)}, ${((Date.now() - started) / 1000).toFixed(0)} s)`);
  });

  for (const name of await readdir(join(from, "bios")).catch(() => [] as string[])) {
    if (name.startsWith(".")) continue;
    if (await putIfChanged(to, `bios/${name}`, await readFile(join(from, "bios", name)))) report.files.push(`bios/${name}`);
  }

  // Manifests last, each after everything it names; the image after its booted snapshot.
  for (const m of manifests) {
    const rel = manifestPath(m.kind, m.name);
    if (m.kind === "snapshot") {
      if (await to.create(rel, m.text)) report.files.push(rel);
      else if ((await to.readText(rel)) !== m.text) throw new PublishError(`${rel} is in the store with other content; snapshots never change`);
    } else if (await putIfChanged(to, rel, Buffer.from(m.text))) report.files.push(rel);
  }
  return report;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      to: { type: "string" },
      repo: { type: "string", default: "build/repo" },
      image: { type: "string", multiple: true },
      concurrency: { type: "string", default: "16" },
    },
  });
  const concurrency = Number(values.concurrency);
  if (!values.to || !Number.isInteger(concurrency) || concurrency < 1) {
    console.error("usage: npm run publish-image -- --to s3://bucket/prefix [--repo build/repo] [--image default]… [--concurrency 16]");
    process.exit(2);
  }
  const images = values.image?.length ? values.image : ["default"];
  const started = Date.now();
  try {
    const to = openStore(values.to);
    const r = await publishImages({ from: values.repo, to, images, concurrency, log: (line) => console.log(line) });
    console.log(
      `published ${images.join(", ")} to ${to.location}: ${r.uploaded} chunks uploaded (${formatBytes(r.bytes)}), ${r.present} already there; ` +
        `${r.files.length ? r.files.join(", ") : "no other file"} written; ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
  } catch (err) {
    console.error(`publish-image: ${describe(err)}`);
    process.exit(1);
  }
}
