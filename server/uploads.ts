/**
 * The repository's write side: publishing snapshots. Everything written is verified first, so the
 * read side stays plain static files any host can serve.
 *
 *   POST /repo/api/missing          {"refs": [...]} → {"missing": [...]}: what to upload
 *   PUT  /repo/chunks/<ref>         a chunk file; its (uncompressed) bytes must hash to <ref>
 *   PUT  /repo/snapshots/<id>.json  a snapshot manifest: schema-checked, its chunks and parent
 *                                   present (no parent for `broughtImage`), never overwritten
 *
 * Sizes are bounded, names are matched by strict patterns (no path can leave the repository), and
 * with SANDGLASS_UPLOAD_TOKEN (or the `uploadToken` option) writes need `Authorization: Bearer`.
 * With a cap (`uploadBytesPerHour`, $SANDGLASS_UPLOAD_MIB_PER_HOUR) one publisher (one client
 * address) may store at most that many new bytes in any hour; past it, writes answer 429.
 *
 * A chunk reported present, or sent again, is held (store.ts: its modification time refreshed in a
 * folder, a lease in a bucket): sweep.ts spares held chunks, so a publish between its `missing`
 * check and its manifest is safe. Every write is a create that never overwrites (on S3 a
 * conditional PUT), so server copies racing on one name cannot both write it.
 *
 * The hourly cap is kept in each server's memory: with several copies behind a load balancer, a
 * publisher may store up to the cap through each copy (README).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { gunzipSync } from "node:zlib";
import {
  MAX_CHUNK_BYTES,
  MAX_MANIFEST_BYTES,
  chunkHash,
  chunkPath,
  isChunkRef,
  isCompressed,
  isValidSnapshotId,
  manifestPath,
  parseManifest,
  referencedChunks,
} from "../src/engine/repo-format.ts";
import { formatBytes } from "../src/app/format.ts";
import type { RepoStore } from "./store.ts";

export interface UploadOptions {
  /** false: every write answers 403. */
  uploads?: boolean;
  /** Required bearer token for writes; defaults to $SANDGLASS_UPLOAD_TOKEN. */
  uploadToken?: string;
  /** New bytes one publisher may store per rolling hour; defaults to $SANDGLASS_UPLOAD_MIB_PER_HOUR MiB; unset: no cap. */
  uploadBytesPerHour?: number;
}

const HOUR_MS = 60 * 60 * 1000;

/** Bytes stored per publisher over the last hour (kept in memory: a restart forgets, by design cheap). */
export class UploadLimiter {
  private readonly spent = new Map<string, { at: number; bytes: number }[]>();
  constructor(
    readonly bytesPerHour: number,
    private readonly now: () => number = Date.now,
  ) {}

  private recent(who: string): { at: number; bytes: number }[] {
    const since = this.now() - HOUR_MS;
    const list = (this.spent.get(who) ?? []).filter((e) => e.at > since);
    if (list.length > 0) this.spent.set(who, list);
    else this.spent.delete(who);
    return list;
  }

  used(who: string): number {
    return this.recent(who).reduce((sum, e) => sum + e.bytes, 0);
  }

  /** null when `bytes` more fit; else the seconds until they would. */
  retryAfter(who: string, bytes: number): number | null {
    const list = this.recent(who);
    let over = list.reduce((sum, e) => sum + e.bytes, 0) + bytes - this.bytesPerHour;
    if (over <= 0) return null;
    if (bytes > this.bytesPerHour) return Math.ceil(HOUR_MS / 1000);
    for (const e of list) {
      over -= e.bytes;
      if (over <= 0) return Math.max(1, Math.ceil((e.at + HOUR_MS - this.now()) / 1000));
    }
    return Math.ceil(HOUR_MS / 1000);
  }

  charge(who: string, bytes: number): void {
    this.spent.set(who, [...this.recent(who), { at: this.now(), bytes }]);
  }
}

const limiters = new WeakMap<UploadOptions, UploadLimiter | null>();

function limiterFor(options: UploadOptions): UploadLimiter | null {
  if (!limiters.has(options)) {
    const env = Number(process.env.SANDGLASS_UPLOAD_MIB_PER_HOUR ?? "");
    const cap = options.uploadBytesPerHour ?? (env > 0 ? env * 1024 * 1024 : 0);
    limiters.set(options, cap > 0 ? new UploadLimiter(cap) : null);
  }
  return limiters.get(options)!;
}

function publisherOf(req: IncomingMessage): string {
  return req.socket.remoteAddress ?? "unknown";
}

const MAX_MISSING_REFS = 200_000;
const MAX_MISSING_BODY = 16 * 1024 * 1024;

type Reply = (status: number, body: Record<string, unknown>, headers?: Record<string, string>) => void;

class TooLarge extends Error {}

/** Past this, an oversized body is cut off rather than read to the end to answer politely. */
const MAX_DRAIN = 64 * 1024 * 1024;

/**
 * Reads a request body, refusing more than `limit` bytes (declared or actually sent). An oversized
 * body is read on and dropped (up to MAX_DRAIN), so the client gets the 413 instead of a reset.
 */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > MAX_DRAIN) {
    req.destroy();
    throw new TooLarge();
  }
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req) {
    size += (part as Buffer).length;
    if (size > MAX_DRAIN) {
      req.destroy();
      break;
    }
    if (size <= limit) parts.push(part as Buffer);
  }
  if (size > limit) throw new TooLarge();
  return Buffer.concat(parts);
}

function tokenOk(req: IncomingMessage, token: string, reply: Reply): boolean {
  const header = req.headers.authorization ?? "";
  const m = /^Bearer\s+(.+)$/i.exec(header);
  if (!m) {
    reply(401, { error: "Publishing to this repository needs an upload token (Authorization: Bearer …)" }, { "WWW-Authenticate": "Bearer" });
    return false;
  }
  const given = Buffer.from(m[1]!.trim());
  const expected = Buffer.from(token);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    reply(403, { error: "The upload token is wrong" });
    return false;
  }
  return true;
}

/**
 * Handles a write request under /repo/ (`rel` is the path after it). Returns false when the
 * request is not a write this module knows, so the caller answers 405.
 */
export async function handleUpload(
  req: IncomingMessage,
  store: RepoStore,
  rel: string,
  options: UploadOptions,
  reply: Reply,
): Promise<boolean> {
  const isMissing = req.method === "POST" && rel === "api/missing";
  const chunk = req.method === "PUT" ? /^chunks\/([^/]+)$/.exec(rel) : null;
  const snapshot = req.method === "PUT" ? /^snapshots\/([^/]+)\.json$/.exec(rel) : null;
  if (!isMissing && !chunk && !snapshot) return false;
  if (options.uploads === false) {
    reply(403, { error: "Uploads are disabled on this server" });
    return true;
  }
  const token = options.uploadToken ?? process.env.SANDGLASS_UPLOAD_TOKEN;
  if (token && !tokenOk(req, token, reply)) return true;
  const name = safeDecode((chunk ?? snapshot)?.[1] ?? "");
  const limiter = limiterFor(options);
  const who = publisherOf(req);
  // A chunk the repository already has costs nothing, so its re-send is never refused.
  if (limiter && !isMissing && !(chunk && isChunkRef(name) && (await store.exists(chunkPath(name))))) {
    // Checked against the declared size before reading, so an over-cap body is not stored first.
    const wait = limiter.retryAfter(who, Number(req.headers["content-length"] ?? "0"));
    if (wait !== null) {
      reply(
        429,
        { error: `This publisher has uploaded its ${formatBytes(limiter.bytesPerHour)} for this hour; try again in ${Math.ceil(wait / 60)} min`, retryAfterSeconds: wait },
        // The body was not read: close, as for 413, so a slow client is not left sending.
        { "Retry-After": String(wait), Connection: "close" },
      );
      return true;
    }
  }
  const stored = (bytes: number) => limiter?.charge(who, bytes);
  try {
    if (isMissing) await missing(req, store, reply);
    else if (chunk) await putChunk(req, store, name, reply, stored);
    else await putSnapshot(req, store, name, reply, stored);
  } catch (err) {
    if (err instanceof TooLarge) reply(413, { error: "The upload is larger than this server accepts" }, { Connection: "close" });
    else throw err;
  }
  return true;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return "";
  }
}

async function missing(req: IncomingMessage, store: RepoStore, reply: Reply): Promise<void> {
  let body: { refs?: unknown };
  try {
    body = JSON.parse((await readBody(req, MAX_MISSING_BODY)).toString("utf8")) as { refs?: unknown };
  } catch (err) {
    if (err instanceof TooLarge) throw err;
    reply(400, { error: "The body must be JSON: {\"refs\": [...]}" });
    return;
  }
  const refs = body.refs;
  if (!Array.isArray(refs) || refs.length > MAX_MISSING_REFS || !refs.every(isChunkRef)) {
    reply(400, { error: `refs must be a list of at most ${MAX_MISSING_REFS} chunk refs` });
    return;
  }
  reply(200, { missing: await store.hold([...new Set(refs)]) });
}

async function putChunk(req: IncomingMessage, store: RepoStore, ref: string, reply: Reply, stored: (bytes: number) => void): Promise<void> {
  if (!isChunkRef(ref)) {
    reply(400, { error: "A chunk is named by the SHA-256 of its content (64 hex digits, .gz if compressed)" });
    return;
  }
  const body = await readBody(req, MAX_CHUNK_BYTES);
  let content: Buffer;
  try {
    content = isCompressed(ref) ? gunzipSync(body, { maxOutputLength: 4 * MAX_CHUNK_BYTES }) : body;
  } catch {
    reply(422, { error: `${ref.slice(0, 12)}… is named .gz but is not gzip data (or unpacks too large)` });
    return;
  }
  const actual = createHash("sha256").update(content).digest("hex");
  if (actual !== chunkHash(ref)) {
    reply(422, { error: `The chunk does not hash to its name: expected ${chunkHash(ref).slice(0, 12)}…, got ${actual.slice(0, 12)}…` });
    return;
  }
  if (!(await store.storeChunk(ref, body))) {
    reply(200, { stored: false, ref });
    return;
  }
  stored(body.length);
  reply(201, { stored: true, ref });
}

async function putSnapshot(req: IncomingMessage, store: RepoStore, id: string, reply: Reply, stored: (bytes: number) => void): Promise<void> {
  if (!isValidSnapshotId(id)) {
    reply(400, { error: "A snapshot id is 26 letters a-z and digits 2-7" });
    return;
  }
  const body = await readBody(req, MAX_MANIFEST_BYTES);
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch {
    reply(400, { error: "The manifest is not valid JSON (truncated?)" });
    return;
  }
  let manifest;
  try {
    manifest = parseManifest(json);
  } catch (err) {
    reply(422, { error: err instanceof Error ? err.message : String(err) });
    return;
  }
  if (manifest.kind !== "snapshot" || manifest.name !== id) {
    reply(422, { error: `The manifest must describe snapshot "${id}"` });
    return;
  }
  const path = manifestPath("snapshot", id);
  const text = JSON.stringify(manifest) + "\n";
  // Stored as re-serialised from the checked manifest, so unknown fields never reach readers.
  const same = async (): Promise<boolean> => {
    const existing = await store.readText(path);
    if (existing === null) return false;
    if (existing === text) reply(200, { stored: false, id });
    else reply(409, { error: "Snapshots are immutable: this id is taken" });
    return true;
  };
  if (await same()) return;
  const absent = await store.hold(referencedChunks(manifest));
  if (absent.length > 0) {
    reply(409, { error: `${absent.length} chunks this snapshot needs are not in the repository; upload them first`, missing: absent.slice(0, 20) });
    return;
  }
  // A snapshot of an image a person brought lists its whole disk: its chunks are all it needs.
  if (!manifest.broughtImage && !(await store.exists(manifestPath(manifest.parent!.kind, manifest.parent!.name)))) {
    reply(409, { error: `The parent ${manifest.parent!.kind} "${manifest.parent!.name}" is not in this repository` });
    return;
  }
  // Another server copy may have written this id since the check above: then it is answered as a
  // re-send (same bytes) or a conflict, and nothing is overwritten.
  if (!(await store.create(path, text))) {
    if (!(await same())) throw new Error(`${path} was reported present but cannot be read`);
    return;
  }
  stored(Buffer.byteLength(text));
  reply(201, { stored: true, id });
}
