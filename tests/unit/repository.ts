/**
 * An in-memory repository for engine tests: a base image with recognisable content and a zero
 * chunk (or an image a test made), its manifest, and a fetch that serves both.
 */
import { createHash } from "node:crypto";
import type { DiskManifest } from "../../src/engine/repo-format.ts";
import type { MachineRecord } from "../../src/engine/store-format.ts";

export function makeRepository(size: number, chunkSize: number) {
  const image = new Uint8Array(size);
  for (let i = 0; i < size; i++) image[i] = (i * 7 + (i >> 9)) & 0xff;
  image.fill(0, 3 * chunkSize, 4 * chunkSize);
  return { image, ...repositoryOf(image, chunkSize, "model", "engine test image") };
}

/**
 * A repository serving `image` as image `name`: its chunks (all-zero ones left out, as the
 * publisher does) and its manifest at images/<name>.json, under http://repo.test/repo/.
 */
export function repositoryOf(image: Uint8Array, chunkSize: number, name: string, description = "test image") {
  const files = new Map<string, Uint8Array>();
  const chunks: (string | null)[] = [];
  for (let at = 0; at < image.byteLength; at += chunkSize) {
    const data = image.slice(at, at + chunkSize);
    if (data.every((b) => b === 0)) {
      chunks.push(null);
      continue;
    }
    const hash = createHash("sha256").update(data).digest("hex");
    files.set(`chunks/${hash}`, data);
    chunks.push(hash);
  }
  const manifest = {
    format: "sandglass-disk",
    version: 1,
    kind: "image",
    name,
    description,
    created: "2026-01-01T00:00:00.000Z",
    size: image.byteLength,
    chunkSize,
    chunks,
    sha256: createHash("sha256").update(image).digest("hex"),
    storedBytes: [...files.values()].reduce((n, f) => n + f.byteLength, 0),
  } as unknown as DiskManifest;
  files.set(`images/${name}.json`, new TextEncoder().encode(JSON.stringify(manifest)));
  const fetchFn = async (url: string) => {
    const body = files.get(new URL(url).pathname.replace(/^\/repo\//, ""));
    return body ? new Response(body as Uint8Array<ArrayBuffer>) : new Response("missing", { status: 404 });
  };
  return { manifest, fetchFn };
}

/** A new machine of the image `makeRepository` serves ("model"), created at `time`. */
export function modelMachine(id: string, name: string, time: number): MachineRecord {
  return {
    id,
    name,
    source: { repo: "http://repo.test/repo/", kind: "image", name: "model" },
    created: time,
    opened: time,
    lastSeq: 0,
    lastBranch: 0,
    now: { branch: 0, seq: 0 },
  };
}
