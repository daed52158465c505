/** Reads a whole disk image into memory: `readFile` stops at 2 GiB, the Debian image is that large. */
import { open } from "node:fs/promises";

export async function readImage(path: string): Promise<Uint8Array<ArrayBuffer>> {
  const file = await open(path);
  try {
    const disk = new Uint8Array((await file.stat()).size);
    for (let at = 0; at < disk.byteLength; ) {
      const { bytesRead } = await file.read(disk, at, Math.min(2 ** 28, disk.byteLength - at), at);
      if (bytesRead === 0) throw new Error(`${path} ended early`);
      at += bytesRead;
    }
    return disk;
  } finally {
    await file.close();
  }
}
