/**
 * Where the repository's files live: a local folder (the default) or an S3-compatible bucket (AWS
 * S3, Cloudflare R2, MinIO, Ceph RGW, Garage), chosen by `SANDGLASS_STORE` / `--store`. The server
 * (repo-server.ts, uploads.ts) and the sweep (sweep.ts) use only this interface, so with S3 every
 * server copy is stateless and any number of them can run on one bucket.
 *
 * Paths are repository-relative (`chunks/<ref>`, `images/<name>.json`, …; repo-format.ts) and were
 * checked by the caller. Writes never overwrite what another writer put: a chunk or a snapshot
 * manifest is created only if absent (on S3, a PUT with `If-None-Match: *`, which the store refuses
 * with 412 when the key exists, so two servers racing on one name cannot both write it).
 *
 * "Holding" chunks (uploads.ts reports them present to a publisher, sweep.ts must then spare them
 * for its grace period):
 *   local  the file's modification time is refreshed, as before this interface existed;
 *   S3     a lease object `.leases/<time>-<random>.json` ({"refs": [...]}) is written *before* the
 *          chunks are looked up; the sweep spares every ref named by a lease younger than the grace
 *          period and deletes older leases. One small PUT per publish, where refreshing each chunk's
 *          LastModified would cost a copy-in-place per chunk (hundreds per publish). The leading dot
 *          keeps leases out of what the server serves (repo-server.ts refuses dot names).
 */
import { createReadStream, type Stats } from "node:fs";
import { link, mkdir, readFile, readdir, rename, stat, unlink, utimes, writeFile } from "node:fs/promises";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { dirname, extname, join, resolve } from "node:path";
import type { Readable } from "node:stream";
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { chunkPath, type ChunkRef } from "../src/engine/repo-format.ts";

/** What a reader needs to know of a stored file. */
export interface StoredFile {
  size: number;
  modified: Date;
  /** Quoted, as sent in the ETag header. */
  etag: string;
}

export interface ListedFile {
  /** The name inside the listed folder. */
  name: string;
  size: number;
  modified: Date;
}

/** A byte range, both ends included. */
export interface ByteRange {
  start: number;
  end: number;
}

/** The outcome of a read (see RepoStore.read). */
export type ReadResult =
  | { file: StoredFile; notModified: true }
  | { file: StoredFile; notModified?: false; range: ByteRange | null | "invalid"; body?: Readable };

export interface RepoStore {
  readonly kind: "local" | "s3";
  /** The folder or s3:// URL, for messages. */
  readonly location: string;
  stat(rel: string): Promise<StoredFile | null>;
  /**
   * A file for a GET or HEAD: `notModified` when `ifNoneMatch` is its ETag; else its range (null:
   * whole, "invalid": unsatisfiable) and, for a GET of a satisfiable range, its bytes.
   */
  read(rel: string, request: { head: boolean; ifNoneMatch?: string; range?: string }): Promise<ReadResult | null>;
  readText(rel: string): Promise<string | null>;
  readBytes(rel: string): Promise<Buffer | null>;
  exists(rel: string): Promise<boolean>;
  /** The refs among `refs` that are absent; the present ones are held (see above). */
  hold(refs: ChunkRef[]): Promise<ChunkRef[]>;
  /** Stores a verified chunk: true if written, false if it was there (and is now held). */
  storeChunk(ref: ChunkRef, body: Uint8Array): Promise<boolean>;
  /** Writes a file that must be new: false, writing nothing, when it exists (a racing writer won). */
  create(rel: string, data: Uint8Array | string): Promise<boolean>;
  /** Writes or replaces a file (publish-image: image manifests, which a re-import changes). */
  put(rel: string, data: Uint8Array | string): Promise<void>;
  /**
   * The files directly in a folder ("chunks", "images", "snapshots"); none if it is absent. With
   * `want`, only the names it accepts (a folder then stats only those).
   */
  list(dir: string, want?: (name: string) => boolean): Promise<ListedFile[]>;
  remove(rel: string): Promise<void>;
  /** Refs held since `since` (ms epoch) by leases; local holds are modification times instead. */
  heldSince(since: number): Promise<Set<ChunkRef>>;
  /** Deletes leases older than `before`; returns how many (local: none). */
  dropLeases(before: number): Promise<number>;
}

/** Thrown when the storage itself fails (unreachable, refused credentials): the server answers 503. */
export class StoreError extends Error {}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".wasm": "application/wasm",
  ".map": "application/json; charset=utf-8",
  // Compressed chunks are opaque files the client gunzips itself (their hash is of the
  // uncompressed bytes), so they are never sent with Content-Encoding.
  ".gz": "application/gzip",
  ".bin": "application/octet-stream",
  ".img": "application/octet-stream",
};

/** The Content-Type a file is served with, by its extension. */
export function contentTypeOf(path: string): string {
  return TYPES[extname(path)] ?? "application/octet-stream";
}

/** The Cache-Control of a repository file (also set on S3 objects, for serving straight from a bucket). */
export function repoCacheControl(relPath: string): string {
  // Chunks are named by their content: they can never change.
  if (relPath.startsWith("chunks/")) return "public, max-age=31536000, immutable";
  // Manifests and BIOS files may be re-imported: always revalidate (cheap with ETags).
  return "no-cache";
}

/** Parses a single `bytes=` range; null for none/unsupported, "invalid" when unsatisfiable. */
export function parseRange(header: string | undefined, size: number): ByteRange | null | "invalid" {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null; // multi-range or other units: answer with the whole file, as allowed
  const [, a, b] = m;
  let start: number;
  let end: number;
  if (a === "" && b === "") return "invalid";
  if (a === "") {
    start = Math.max(0, size - Number(b));
    end = size - 1;
  } else {
    start = Number(a);
    end = b === "" ? size - 1 : Math.min(Number(b), size - 1);
  }
  if (start > end || start >= size) return "invalid";
  return { start, end };
}

/** Runs `fn` over `items`, at most `limit` at a time. */
export async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// ── the local folder ──────────────────────────────────────────────────────────────────────────

function etagOf(s: Stats): string {
  return `"${s.size.toString(16)}-${Math.floor(s.mtimeMs).toString(16)}"`;
}

export class LocalStore implements RepoStore {
  readonly kind = "local";
  readonly root: string;
  constructor(root: string) {
    this.root = resolve(root);
  }
  get location(): string {
    return this.root;
  }

  private path(rel: string): string {
    return join(this.root, rel);
  }

  private async fileStats(rel: string): Promise<Stats | null> {
    try {
      const s = await stat(this.path(rel));
      return s.isFile() ? s : null;
    } catch {
      return null;
    }
  }

  async stat(rel: string): Promise<StoredFile | null> {
    const s = await this.fileStats(rel);
    return s && { size: s.size, modified: s.mtime, etag: etagOf(s) };
  }

  async read(rel: string, request: { head: boolean; ifNoneMatch?: string; range?: string }): Promise<ReadResult | null> {
    const file = await this.stat(rel);
    if (!file) return null;
    if (request.ifNoneMatch === file.etag) return { file, notModified: true };
    const range = parseRange(request.range, file.size);
    if (range === "invalid" || request.head || file.size === 0) return { file, range };
    const start = range ? range.start : 0;
    const end = range ? range.end : file.size - 1;
    return { file, range, body: createReadStream(this.path(rel), { start, end }) };
  }

  readText(rel: string): Promise<string | null> {
    return readFile(this.path(rel), "utf8").catch(() => null);
  }

  readBytes(rel: string): Promise<Buffer | null> {
    return readFile(this.path(rel)).catch(() => null);
  }

  async exists(rel: string): Promise<boolean> {
    return (await this.fileStats(rel)) !== null;
  }

  /** Refreshes a file's modification time (see sweep.ts); false when it does not exist. */
  private async touch(rel: string): Promise<boolean> {
    const now = new Date();
    return utimes(this.path(rel), now, now).then(
      () => true,
      () => false,
    );
  }

  private async writeAtomic(rel: string, data: Uint8Array | string): Promise<void> {
    const path = this.path(rel);
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.upload-${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      await writeFile(tmp, data);
      await rename(tmp, path);
    } catch (err) {
      // A full disk or a failed rename: no half-written file is left behind.
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Writes a whole file under a name only if the name is free (false, writing nothing, if not):
   * a hard link fails with EEXIST where a rename would replace, so two servers on one folder
   * cannot both write a name.
   */
  private async writeNew(rel: string, data: Uint8Array | string): Promise<boolean> {
    const path = this.path(rel);
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.upload-${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      await writeFile(tmp, data);
      await link(tmp, path);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EEXIST") return false;
      // A filesystem without hard links: a rename, whole at once (one server per such folder).
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "ENOSYS") throw err;
      await rename(tmp, path);
      return true;
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }

  async hold(refs: ChunkRef[]): Promise<ChunkRef[]> {
    const absent: ChunkRef[] = [];
    for (const ref of refs) if (!(await this.touch(chunkPath(ref)))) absent.push(ref);
    return absent;
  }

  async storeChunk(ref: ChunkRef, body: Uint8Array): Promise<boolean> {
    if (await this.touch(chunkPath(ref))) return false;
    if (await this.writeNew(chunkPath(ref), body)) return true;
    // Another server on this folder wrote it meanwhile: it is there, and now held.
    await this.touch(chunkPath(ref));
    return false;
  }

  create(rel: string, data: Uint8Array | string): Promise<boolean> {
    return this.writeNew(rel, data);
  }

  put(rel: string, data: Uint8Array | string): Promise<void> {
    return this.writeAtomic(rel, data);
  }

  async list(dir: string, want: (name: string) => boolean = () => true): Promise<ListedFile[]> {
    const names = await readdir(this.path(dir)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return [] as string[];
      throw err;
    });
    const files: ListedFile[] = [];
    for (const name of names.filter(want)) {
      const s = await stat(join(this.path(dir), name)).catch(() => null);
      if (s?.isFile()) files.push({ name, size: s.size, modified: s.mtime });
    }
    return files;
  }

  async remove(rel: string): Promise<void> {
    await unlink(this.path(rel)).catch(() => undefined);
  }

  async heldSince(): Promise<Set<ChunkRef>> {
    return new Set();
  }

  async dropLeases(): Promise<number> {
    return 0;
  }
}

// ── an S3-compatible bucket ───────────────────────────────────────────────────────────────────

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix the repository lives under ("" for the bucket's root). */
  prefix: string;
  /** e.g. http://127.0.0.1:4569 or an R2/MinIO URL; the SDK's default (AWS) when omitted. */
  endpoint?: string;
  region?: string;
  /** Path-style URLs (bucket in the path): MinIO and most self-hosted stores need them. */
  forcePathStyle?: boolean;
  /** Default: the SDK's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, roles). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Requests in flight per store (HEADs of a `missing` check run this many at once). */
  concurrency?: number;
}

const LEASES = ".leases/";

const statusOf = (err: unknown): number | undefined =>
  err instanceof S3ServiceException ? err.$metadata.httpStatusCode : (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;

/** Wraps a failure of the storage itself so the server says so (503) rather than 500. */
function storageFailure(err: unknown, what: string): StoreError {
  const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return new StoreError(`The repository's storage failed to ${what} (${detail})`);
}

export class S3Store implements RepoStore {
  readonly kind = "s3";
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  private readonly concurrency: number;

  constructor(options: S3StoreOptions) {
    this.bucket = options.bucket;
    this.prefix = options.prefix.replace(/^\/+|\/+$/g, "");
    this.concurrency = options.concurrency ?? 32;
    const sockets = Math.max(64, this.concurrency * 2);
    this.client = new S3Client({
      region: options.region ?? "us-east-1",
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      forcePathStyle: options.forcePathStyle ?? Boolean(options.endpoint),
      ...(options.credentials ? { credentials: options.credentials } : {}),
      // Every chunk is checked by its SHA-256 before it is written and by readers after; the SDK's
      // default extra CRC32 (trailing checksums) is not understood by several S3-compatible stores.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      requestHandler: {
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets: sockets }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: sockets }),
        // Requests wait for a socket under load by design (bounded fan-out); warn only if stuck.
        socketAcquisitionWarningTimeout: 30_000,
      },
    });
  }

  get location(): string {
    return `s3://${this.bucket}/${this.prefix}`;
  }

  key(rel: string): string {
    return this.prefix ? `${this.prefix}/${rel}` : rel;
  }

  private headersFor(rel: string): { ContentType: string; CacheControl: string } {
    return { ContentType: contentTypeOf(rel), CacheControl: repoCacheControl(rel) };
  }

  async stat(rel: string): Promise<StoredFile | null> {
    try {
      const h = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(rel) }));
      return { size: h.ContentLength ?? 0, modified: h.LastModified ?? new Date(0), etag: h.ETag ?? '""' };
    } catch (err) {
      if (statusOf(err) === 404) return null;
      throw storageFailure(err, `look up ${rel}`);
    }
  }

  async read(rel: string, request: { head: boolean; ifNoneMatch?: string; range?: string }): Promise<ReadResult | null> {
    if (request.range || request.head) {
      // A range needs the size first (to answer 416 or clamp as the local store does).
      const file = await this.stat(rel);
      if (!file) return null;
      if (request.ifNoneMatch === file.etag) return { file, notModified: true };
      const range = parseRange(request.range, file.size);
      if (range === "invalid" || request.head || file.size === 0) return { file, range };
      return { file, range, body: await this.get(rel, range ?? undefined) };
    }
    // A plain GET is one request: S3 answers the ETag check itself.
    try {
      const got = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(rel), ...(request.ifNoneMatch ? { IfNoneMatch: request.ifNoneMatch } : {}) }),
      );
      const file = { size: got.ContentLength ?? 0, modified: got.LastModified ?? new Date(0), etag: got.ETag ?? '""' };
      return { file, range: null, body: got.Body as Readable };
    } catch (err) {
      const status = statusOf(err);
      if (status === 404) return null;
      if (status === 304) return { file: { size: 0, modified: new Date(0), etag: request.ifNoneMatch! }, notModified: true };
      throw storageFailure(err, `read ${rel}`);
    }
  }

  private async get(rel: string, range?: ByteRange): Promise<Readable> {
    try {
      const got = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(rel), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }),
      );
      return got.Body as Readable;
    } catch (err) {
      throw storageFailure(err, `read ${rel}`);
    }
  }

  async readText(rel: string): Promise<string | null> {
    return (await this.readBytes(rel))?.toString("utf8") ?? null;
  }

  async readBytes(rel: string): Promise<Buffer | null> {
    try {
      const got = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(rel) }));
      return Buffer.from(await got.Body!.transformToByteArray());
    } catch (err) {
      if (statusOf(err) === 404) return null;
      throw storageFailure(err, `read ${rel}`);
    }
  }

  async exists(rel: string): Promise<boolean> {
    return (await this.stat(rel)) !== null;
  }

  /** Writes a lease naming `refs` (see the notes at the top). */
  private async lease(refs: ChunkRef[]): Promise<void> {
    if (refs.length === 0) return;
    const name = `${new Date().toISOString().replace(/[:.]/g, "")}-${Math.random().toString(36).slice(2, 12)}.json`;
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: this.key(LEASES + name), Body: JSON.stringify({ refs }), ContentType: "application/json", IfNoneMatch: "*" }),
      );
    } catch (err) {
      throw storageFailure(err, "record a lease on the chunks being published");
    }
  }

  async hold(refs: ChunkRef[]): Promise<ChunkRef[]> {
    // The lease first: a sweep that reads it after this spares the chunks found present below.
    await this.lease(refs);
    const present = new Array<boolean>(refs.length);
    await inParallel([...refs.keys()], this.concurrency, async (i) => {
      present[i] = await this.exists(chunkPath(refs[i]!));
    });
    return refs.filter((_, i) => !present[i]);
  }

  async storeChunk(ref: ChunkRef, body: Uint8Array): Promise<boolean> {
    if (await this.create(chunkPath(ref), body)) return true;
    await this.lease([ref]);
    return false;
  }

  async create(rel: string, data: Uint8Array | string): Promise<boolean> {
    // AWS answers 409 ConditionalRequestConflict while another conditional write of the key is in flight.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.key(rel), Body: data, IfNoneMatch: "*", ...this.headersFor(rel) }));
        return true;
      } catch (err) {
        const status = statusOf(err);
        if (status === 412) return false;
        if (status === 409 && attempt < 5) {
          await new Promise((r) => setTimeout(r, 50 * 2 ** attempt));
          continue;
        }
        throw storageFailure(err, `write ${rel}`);
      }
    }
  }

  async put(rel: string, data: Uint8Array | string): Promise<void> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.key(rel), Body: data, ...this.headersFor(rel) }));
    } catch (err) {
      throw storageFailure(err, `write ${rel}`);
    }
  }

  /** Every object under a key prefix (relative to the repository), following continuation tokens. */
  private async listKeys(dir: string): Promise<{ key: string; size: number; modified: Date }[]> {
    const prefix = this.key(dir.endsWith("/") ? dir : `${dir}/`);
    const out: { key: string; size: number; modified: Date }[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, Delimiter: "/", ContinuationToken: token }));
        for (const o of page.Contents ?? []) {
          if (o.Key && o.Key !== prefix) out.push({ key: o.Key.slice(prefix.length), size: o.Size ?? 0, modified: o.LastModified ?? new Date(0) });
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw storageFailure(err, `list ${dir}`);
    }
    return out;
  }

  async list(dir: string, want: (name: string) => boolean = () => true): Promise<ListedFile[]> {
    return (await this.listKeys(dir)).filter((o) => want(o.key)).map((o) => ({ name: o.key, size: o.size, modified: o.modified }));
  }

  async remove(rel: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(rel) }));
    } catch (err) {
      if (statusOf(err) !== 404) throw storageFailure(err, `delete ${rel}`);
    }
  }

  async heldSince(since: number): Promise<Set<ChunkRef>> {
    const held = new Set<ChunkRef>();
    const recent = (await this.listKeys(LEASES)).filter((l) => l.modified.getTime() >= since);
    await inParallel(recent, this.concurrency, async (l) => {
      const text = await this.readText(LEASES + l.key);
      if (text === null) return; // dropped by another sweep meanwhile: it had expired
      let refs: unknown;
      try {
        refs = (JSON.parse(text) as { refs?: unknown }).refs;
      } catch {
        throw new StoreError(`The lease ${LEASES}${l.key} cannot be read; nothing was deleted`);
      }
      if (Array.isArray(refs)) for (const ref of refs) if (typeof ref === "string") held.add(ref);
    });
    return held;
  }

  async dropLeases(before: number): Promise<number> {
    const old = (await this.listKeys(LEASES)).filter((l) => l.modified.getTime() < before);
    await inParallel(old, this.concurrency, (l) => this.remove(LEASES + l.key));
    return old.length;
  }
}

// ── choosing one ──────────────────────────────────────────────────────────────────────────────

/** Parses `s3://bucket/prefix`; null for anything else (a local folder). */
export function parseS3Url(spec: string): { bucket: string; prefix: string } | null {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(spec.trim());
  if (!m) return null;
  return { bucket: m[1]!, prefix: m[2]!.replace(/\/+$/, "") };
}

/**
 * The store a spec names: `s3://bucket/prefix` (endpoint $SANDGLASS_S3_ENDPOINT, region
 * $AWS_REGION, credentials from the AWS variables, path-style unless $SANDGLASS_S3_PATH_STYLE=0)
 * or a folder.
 */
export function openStore(spec: string, env: NodeJS.ProcessEnv = process.env, overrides: Partial<S3StoreOptions> = {}): RepoStore {
  const s3 = parseS3Url(spec);
  if (!s3) return new LocalStore(spec);
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(s3.bucket)) throw new Error(`"${s3.bucket}" is not a valid bucket name (in ${spec})`);
  const endpoint = env.SANDGLASS_S3_ENDPOINT || env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined;
  const pathStyle = env.SANDGLASS_S3_PATH_STYLE;
  return new S3Store({
    ...s3,
    endpoint,
    region: env.AWS_REGION || env.AWS_DEFAULT_REGION || "us-east-1",
    forcePathStyle: pathStyle === undefined || pathStyle === "" ? Boolean(endpoint) : pathStyle !== "0",
    // Keys in `env` first (as the SDK's own chain would from process.env); else the SDK's chain.
    ...(env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY
      ? { credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) } }
      : {}),
    ...overrides,
  });
}
