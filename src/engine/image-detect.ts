/**
 * What kind of disk image a file is, from its first bytes and its size: a CD (ISO 9660), a floppy
 * (a standard floppy size), or a hard disk (a boot sector). Anything else is refused with a
 * message that says what the file is instead. Pure: the browser importer and the command-line
 * importer (scripts/import-image.ts) both use it.
 */
import type { BootDevice } from "./repo-format.ts";

/** Bytes of the file's start that detection looks at (the ISO 9660 primary volume descriptor ends at 34 KiB). */
export const DETECT_BYTES = 36 * 1024;

export interface DetectedImage {
  bootDevice: BootDevice;
  /** What it is, for people ("CD image (ISO 9660), volume FREEDOS"). */
  label: string;
}

/** The file is not a disk image Sandglass can boot, or is damaged. */
export class NotAnImageError extends Error {
  constructor(file: string, why: string) {
    super(`“${file}” cannot be used as a disk image: ${why}`);
    this.name = "NotAnImageError";
  }
}

/** Floppy image sizes v86's floppy controller knows (bytes). */
const FLOPPY_SIZES = new Map<number, string>([
  [163840, "160 KB"],
  [184320, "180 KB"],
  [327680, "320 KB"],
  [368640, "360 KB"],
  [737280, "720 KB"],
  [1228800, "1.2 MB"],
  [1474560, "1.44 MB"],
  [1720320, "1.68 MB (DMF)"],
  [2949120, "2.88 MB"],
]);

/** Formats people often have instead of a raw image, with what to do about it. */
const NOT_RAW: { magic: number[]; at?: number; what: string }[] = [
  { magic: [0x89, 0x50, 0x4e, 0x47], what: "it is a PNG picture" },
  { magic: [0xff, 0xd8, 0xff], what: "it is a JPEG picture" },
  { magic: [0x47, 0x49, 0x46, 0x38], what: "it is a GIF picture" },
  { magic: [0x25, 0x50, 0x44, 0x46], what: "it is a PDF document" },
  { magic: [0x50, 0x4b, 0x03, 0x04], what: "it is a ZIP archive (unpack the image from it first)" },
  { magic: [0x1f, 0x8b], what: "it is gzip-compressed (decompress it first, for example with gunzip)" },
  { magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], what: "it is xz-compressed (decompress it first, for example with unxz)" },
  { magic: [0x51, 0x46, 0x49, 0xfb], what: "it is a QEMU qcow2 image (convert it: qemu-img convert -O raw in.qcow2 out.img)" },
  { magic: [0x4b, 0x44, 0x4d, 0x56], what: "it is a VMware VMDK image (convert it: qemu-img convert -O raw in.vmdk out.img)" },
  { magic: [0x3c, 0x3c, 0x3c, 0x20], at: 0x40, what: "it is a VirtualBox VDI image (convert it: VBoxManage clonemedium in.vdi out.img --format RAW)" },
  { magic: [0x63, 0x6f, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x78], what: "it is a Hyper-V VHD image (convert it to raw first)" },
];

const ascii = (bytes: Uint8Array, from: number, length: number) => String.fromCharCode(...bytes.subarray(from, from + length));
const u16 = (b: Uint8Array, at: number) => b[at]! | (b[at + 1]! << 8);
const u32 = (b: Uint8Array, at: number) => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

/** Detects the image in `head` (the file's first DETECT_BYTES, or all of a shorter file) of a `size`-byte file. */
export function detectImage(file: string, size: number, head: Uint8Array): DetectedImage {
  if (size === 0) throw new NotAnImageError(file, "the file is empty.");
  for (const { magic, at = 0, what } of NOT_RAW) {
    if (head.length >= at + magic.length && magic.every((b, i) => head[at + i] === b)) throw new NotAnImageError(file, `${what}.`);
  }
  // ISO 9660: "CD001" in the primary volume descriptor at sector 16 (2048-byte sectors).
  if (head.length >= 0x8800 && head[0x8000] === 1 && ascii(head, 0x8001, 5) === "CD001") {
    const blockSize = u16(head, 0x8080);
    const volumeBytes = u32(head, 0x8050) * blockSize;
    if (volumeBytes > size) {
      throw new NotAnImageError(file, `it is a CD image (ISO 9660) cut short: the CD is ${mib(volumeBytes)}, the file only ${mib(size)}. Download it again.`);
    }
    if (size % 512 !== 0) throw new NotAnImageError(file, "it is a CD image (ISO 9660) whose size is not a whole number of sectors.");
    const volume = ascii(head, 0x8028, 32).trim();
    return { bootDevice: "cdrom", label: `CD image (ISO 9660)${volume ? `, volume ${volume}` : ""}` };
  }
  if (head.length >= 0x8006 && ascii(head, 0x8001, 5) === "CD001") {
    throw new NotAnImageError(file, "it is a CD image (ISO 9660) cut short before its volume descriptor ends.");
  }
  const floppy = FLOPPY_SIZES.get(size);
  if (floppy) return { bootDevice: "fda", label: `${floppy} floppy image${bootSignature(head) ? "" : " (no boot sector: the machine will not start from it)"}` };
  if (size % 512 !== 0) {
    throw new NotAnImageError(file, `its size (${size} bytes) is not a whole number of 512-byte sectors: a disk image cut short, or not a disk image.`);
  }
  if (bootSignature(head)) {
    const gpt = head.length >= 520 && ascii(head, 512, 8) === "EFI PART";
    return { bootDevice: "hda", label: `hard disk image (${gpt ? "GPT" : "MBR"}), ${mib(size)}` };
  }
  throw new NotAnImageError(file, "it is neither a CD image (ISO 9660), a floppy image of a standard size, nor a bootable hard disk image (no boot sector).");
}

function bootSignature(head: Uint8Array): boolean {
  return head.length >= 512 && head[510] === 0x55 && head[511] === 0xaa;
}
