/**
 * gzip for repository files. Inflating uses fflate (synchronous, in the worker): opening a
 * snapshot or booting inflates hundreds of small files, and a DecompressionStream costs several
 * milliseconds of setup each, more than the inflating itself. Compressing (publishing only) keeps
 * the browser's native CompressionStream, which is faster on large inputs.
 */
import { gunzipSync } from "fflate";

/** Inflates gzip data; throws on anything that is not a complete gzip stream. */
export function gunzip(data: Uint8Array): Uint8Array {
  return gunzipSync(data);
}

export async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
