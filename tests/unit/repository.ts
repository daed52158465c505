/**
 * An in-memory repository for engine tests: a base image with recognisable content and a zero
 * chunk, its manifest, and a fetch that serves its chunks.
 */
import { createHash } from "node:crypto";
import type { DiskManifest } from "../../src/engine/repo-format.ts";
import type { MachineRecord } from "../../src/engine/store-format.ts";

export function makeRepository(size: number, chunkSize: number) {
  const image = new Uint8Array(size);
  for (let i = 0; i < size; i++) image[i] = (i * 7 + (i >> 9)) & 0xff;
  image.fill(0, 3 * chunkSize, 4 * chunkSize);
  const files = new Map<string, Uint8Array>();
  const chunks: (string | null)[] = [];
  for (let c = 0; c < size / chunkSize; c++) {
    const data = image.slice(c * chunkSize, (c + 1) * chunkSize);
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
    name: "model",
    description: "engine test image",
    created: "2026-01-01T00:00:00.000Z",
    size,
    chunkSize,
    chunks,
    sha256: createHash("sha256").update(image).digest("hex"),
    storedBytes: [...files.values()].reduce((n, f) => n + f.byteLength, 0),
  } as unknown as DiskManifest;
  const fetchFn = async (url: string) => {
    const path = new URL(url).pathname.replace(/^\/repo\//, "");
    const body = files.get(path);
    return body ? new Response(body as Uint8Array<ArrayBuffer>) : new Response("missing", { status: 404 });
  };
  return { image, manifest, fetchFn };
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
