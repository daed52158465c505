/**
 * An image read from a URL a chunk at a time with HTTP Range requests: nothing is downloaded
 * whole, and what was fetched is kept in IndexedDB like repository chunks.
 *
 * A remote file has no hashes, so it is pinned: its identity (size, ETag, Last-Modified) when it
 * is first opened, and each chunk's SHA-256 when that chunk is first fetched (store-format.ts,
 * `remotePins`). A remote that changes under a machine is refused, never mixed: every response is
 * checked against the identity, and opening a machine fetches one pinned chunk again and compares
 * its hash (which catches a change even on a server that sends no validators).
 */
import type { Fetch } from "./chunk-source.ts";
import { sleep } from "./util.ts";

/** What must stay the same for the remote file to be the one a machine was made of. */
export interface RemoteIdentity {
  url: string;
  size: number;
  etag?: string;
  lastModified?: string;
}

/** The URL cannot be used, with the cause in words a person can act on. */
export class RemoteImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RemoteImageError";
  }
}

/** The file at the URL is not the one this machine was made of any more. */
export class RemoteChangedError extends RemoteImageError {
  constructor(identity: RemoteIdentity, what: string) {
    super(
      `The image at ${identity.url} has changed since this machine first read it (${what}). Sandglass will not mix ` +
        "blocks of two versions of a disk: what this machine already read still works (its history and checkpoints " +
        "open), but blocks it never read cannot be read any more. Open the URL again to make a machine of the new version.",
    );
    this.name = "RemoteChangedError";
  }
}

const ATTEMPTS = 4;

const hostOf = (url: string) => new URL(url).host;

/** A checked http(s) URL, or the reason it is not one. */
export function imageUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    throw new RemoteImageError(`"${text.trim().slice(0, 200)}" is not a URL.`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new RemoteImageError(`Only http:// and https:// URLs can be opened (this one is ${url.protocol}).`);
  }
  url.hash = "";
  return url.href;
}

/** A file name for an image at `url` (its last path segment). */
export function urlFileName(url: string): string {
  const segment = decodeURIComponent(new URL(url).pathname.split("/").filter(Boolean).at(-1) ?? "");
  return segment || hostOf(url);
}

/**
 * Why a fetch that threw failed: a server that answers but does not allow this page to read it
 * (CORS), or no answer at all. An opaque "no-cors" request tells them apart.
 */
async function unreachable(url: string, fetchFn: Fetch, err: unknown): Promise<RemoteImageError> {
  const answered = await fetchFn(url, { mode: "no-cors", cache: "no-store" }).then(
    () => true,
    () => false,
  );
  if (answered) {
    return new RemoteImageError(
      `The server ${hostOf(url)} answers, but does not let this page read the file: it sends no CORS header ` +
        "(Access-Control-Allow-Origin) for it. Serve the image with CORS allowed, or download it and open the file.",
    );
  }
  return new RemoteImageError(`Could not reach ${hostOf(url)} (${err instanceof Error ? err.message : String(err)}).`);
}

const noRange = (url: string) =>
  new RemoteImageError(
    `The server ${hostOf(url)} does not answer HTTP Range requests (it sent the whole file when asked for a part). ` +
      "Sandglass reads an image from a URL a block at a time; download it and open the file instead.",
  );

/** The identity a response shows (validators are only visible across origins when exposed). */
function validators(response: Response): Pick<RemoteIdentity, "etag" | "lastModified"> {
  const etag = response.headers.get("etag");
  const lastModified = response.headers.get("last-modified");
  return { ...(etag ? { etag } : {}), ...(lastModified ? { lastModified } : {}) };
}

/** The total size in a 206's Content-Range (null when the header is not visible). */
function rangeTotal(response: Response): number | null {
  const match = /\/(\d+)\s*$/.exec(response.headers.get("content-range") ?? "");
  return match ? Number(match[1]) : null;
}

/**
 * Looks at the file at `url`: its identity and its first `headBytes` (for detection), with one
 * Range request (and a HEAD when the size is not visible). Throws RemoteImageError with the cause.
 */
export async function probeRemote(url: string, fetchFn: Fetch, headBytes: number): Promise<{ identity: RemoteIdentity; head: Uint8Array }> {
  let response: Response;
  try {
    response = await fetchFn(url, { headers: { Range: `bytes=0-${headBytes - 1}` }, cache: "no-store" });
  } catch (err) {
    throw await unreachable(url, fetchFn, err);
  }
  if (response.status === 416) return { identity: { url, size: 0, ...validators(response) }, head: new Uint8Array(0) };
  if (response.status === 200) {
    await response.body?.cancel().catch(() => undefined);
    throw noRange(url);
  }
  if (response.status !== 206) {
    throw new RemoteImageError(`The server ${hostOf(url)} answered HTTP ${response.status} for ${url}.`);
  }
  const head = new Uint8Array(await response.arrayBuffer());
  let size = rangeTotal(response);
  if (size === null) {
    // A cross-origin server that does not expose Content-Range: a HEAD's Content-Length is visible.
    const headResponse = await fetchFn(url, { method: "HEAD", cache: "no-store" }).catch(() => null);
    const length = headResponse?.ok ? Number(headResponse.headers.get("content-length")) : NaN;
    if (!Number.isSafeInteger(length) || length < head.byteLength) {
      throw new RemoteImageError(
        `The server ${hostOf(url)} does not say how large the file is (no Content-Range or Content-Length this page can read).`,
      );
    }
    size = length;
  }
  return { identity: { url, size, ...validators(response) }, head: head.subarray(0, Math.min(head.byteLength, size)) };
}

/** Reads chunks of a pinned remote file; refuses (for good) once the file is seen to have changed. */
export class RemoteBlocks {
  /** Bytes received from the server (the benchmark's "bytes fetched"). */
  bytesFetched = 0;
  requests = 0;
  private changed: RemoteChangedError | null = null;

  constructor(
    readonly identity: RemoteIdentity,
    private readonly chunkSize: number,
    private readonly fetchFn: Fetch,
  ) {}

  /** Set when a response showed another version of the file. */
  get changedError(): RemoteChangedError | null {
    return this.changed;
  }

  /** Chunk `index` (`length` bytes) from the server, checked against the pinned identity. */
  fetchChunk(index: number, length: number): Promise<Uint8Array> {
    return this.fetchBytes(index * this.chunkSize, length);
  }

  /** `length` bytes of the file from `start` in one Range request, checked against the pinned identity. */
  async fetchBytes(start: number, length: number): Promise<Uint8Array> {
    if (this.changed) throw this.changed;
    let lastError: unknown;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (attempt > 0) await sleep(250 * 2 ** attempt);
      let response: Response;
      try {
        this.requests++;
        response = await this.fetchFn(this.identity.url, {
          headers: { Range: `bytes=${start}-${start + length - 1}` },
          cache: "no-store",
        });
      } catch (err) {
        lastError = new RemoteImageError(`Network error while reading the image from ${hostOf(this.identity.url)}: ${String(err)}`);
        continue;
      }
      if (response.status === 200) {
        await response.body?.cancel().catch(() => undefined);
        throw noRange(this.identity.url);
      }
      if (response.status === 416) throw this.refuse("it is shorter now");
      if (response.status !== 206) {
        lastError = new RemoteImageError(`The server ${hostOf(this.identity.url)} answered HTTP ${response.status} for a block of the image.`);
        if (response.status === 404 || response.status === 410) throw this.refuse(`HTTP ${response.status}: it is gone`);
        continue;
      }
      this.checkIdentity(response);
      let body: Uint8Array;
      try {
        body = new Uint8Array(await response.arrayBuffer());
      } catch (err) {
        lastError = new RemoteImageError(`The connection to ${hostOf(this.identity.url)} broke while reading a block: ${String(err)}`);
        continue;
      }
      this.bytesFetched += body.byteLength;
      if (body.byteLength !== length) throw this.refuse(`a block came back ${body.byteLength} bytes long, not ${length}`);
      return body;
    }
    throw lastError;
  }

  /** Throws RemoteChangedError when the response belongs to another version of the file. */
  checkIdentity(response: Response): void {
    const seen = validators(response);
    const total = rangeTotal(response);
    if (total !== null && total !== this.identity.size) throw this.refuse(`its size is ${total} bytes, not ${this.identity.size}`);
    if (this.identity.etag && seen.etag && seen.etag !== this.identity.etag) throw this.refuse("its ETag is different");
    if (this.identity.lastModified && seen.lastModified && seen.lastModified !== this.identity.lastModified) {
      throw this.refuse(`it was modified ${seen.lastModified}`);
    }
  }

  /** Marks the file as changed (every later read is refused) and returns the error. */
  refuse(what: string): RemoteChangedError {
    this.changed ??= new RemoteChangedError(this.identity, what);
    return this.changed;
  }
}
