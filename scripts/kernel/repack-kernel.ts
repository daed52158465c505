/**
 * Repacks Debian's guest kernel (a bzImage whose image is xz-compressed) so that it unpacks fast in
 * the emulator: inflating xz took the emulated CPU ~6 s of a ~22 s cold boot. The kernel's own
 * real-mode setup code is kept; its protected-mode part (the xz decompressor and payload) is
 * replaced by lz4-boot.asm followed by the same kernel image as LZ4, which unpacks in well under a
 * second. The kernel then runs at the address it was linked for (no physical KASLR: the emulated
 * machine's layout is the same on every boot anyway).
 *   tsx scripts/kernel/repack-kernel.ts IN_BZIMAGE OUT_BZIMAGE
 * Needs xz, lz4 and nasm. Same input, same bytes.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const [input, output] = process.argv.slice(2);
if (!input || !output) throw new Error("usage: repack-kernel.ts IN_BZIMAGE OUT_BZIMAGE");
const STUB = join(dirname(fileURLToPath(import.meta.url)), "lz4-boot.asm");
/** Where the boot protocol loads a kernel that is not relocatable, and where the stub runs. */
const PROTECTED_MODE_BASE = 0x100000;

const bz = readFileSync(input);
const u8 = (at: number) => bz.readUInt8(at);
const u32 = (at: number) => bz.readUInt32LE(at);
if (u32(0x202) !== 0x53726448 || bz.readUInt16LE(0x206) < 0x20a) throw new Error(`${input}: not a bzImage of boot protocol 2.10 or later`);
const setupLength = ((u8(0x1f1) || 4) + 1) * 512;
// The payload (boot protocol 2.08+): the compressed kernel image, then its size (4 bytes, LE).
const payload = bz.subarray(setupLength + u32(0x248), setupLength + u32(0x248) + u32(0x24c));
const expectedSize = payload.readUInt32LE(payload.length - 4);
if (payload.subarray(0, 6).toString("latin1") !== "\xfd7zXZ\0") throw new Error(`${input}: the kernel's payload is not xz`);
const elf = execFileSync("xz", ["-dc", "--single-stream"], { input: payload, maxBuffer: 1 << 30 });
if (elf.length !== expectedSize) throw new Error(`${input}: the payload inflated to ${elf.length} bytes, not ${expectedSize}`);

// The image as the kernel's own decompressor would lay it out: each PT_LOAD segment at its
// physical address (the rest of a segment, its BSS, the kernel clears itself).
if (elf.readUInt32BE(0) !== 0x7f454c46 || elf.readUInt8(4) !== 1) throw new Error(`${input}: the payload is not a 32-bit ELF kernel`);
const entry = elf.readUInt32LE(24);
const phoff = elf.readUInt32LE(28);
const phentsize = elf.readUInt16LE(42);
const segments: { offset: number; paddr: number; filesz: number; memsz: number }[] = [];
for (let i = 0; i < elf.readUInt16LE(44); i++) {
  const at = phoff + i * phentsize;
  if (elf.readUInt32LE(at) !== 1) continue; // PT_LOAD
  segments.push({ offset: elf.readUInt32LE(at + 4), paddr: elf.readUInt32LE(at + 12), filesz: elf.readUInt32LE(at + 16), memsz: elf.readUInt32LE(at + 20) });
}
const loadAddress = Math.min(...segments.map((s) => s.paddr));
const imageEnd = Math.max(...segments.map((s) => s.paddr + s.filesz));
const memoryEnd = Math.max(...segments.map((s) => s.paddr + s.memsz));
if (loadAddress !== Number(bz.readBigUInt64LE(0x258))) throw new Error(`${input}: the kernel is linked at ${loadAddress.toString(16)}, not its preferred address`);
const flat = Buffer.alloc(imageEnd - loadAddress);
for (const s of segments) elf.copy(flat, s.paddr - loadAddress, s.offset, s.offset + s.filesz);

const work = mkdtempSync(join(tmpdir(), "repack-kernel-"));
try {
  writeFileSync(join(work, "kernel.bin"), flat);
  execFileSync("lz4", ["-q", "-l", "-12", "-f", join(work, "kernel.bin"), join(work, "kernel.lz4")]);
  execFileSync("nasm", ["-f", "bin", `-DLOAD_ADDR=${loadAddress}`, `-DENTRY=${entry}`, `-DPAYLOAD="${join(work, "kernel.lz4")}"`, "-o", join(work, "pm.bin"), STUB]);
  const stub = readFileSync(join(work, "pm.bin"));
  const protectedMode = Buffer.alloc(Math.ceil(stub.length / 16) * 16);
  stub.copy(protectedMode);
  if (PROTECTED_MODE_BASE + protectedMode.length > loadAddress) throw new Error("the packed kernel would overlap where it unpacks");

  const setup = Buffer.from(bz.subarray(0, setupLength));
  setup.writeUInt32LE(protectedMode.length / 16, 0x1f4); // syssize
  setup.writeUInt8(0, 0x234); // not relocatable: loaded at code32_start (0x100000), where the stub runs
  setup.writeUInt32LE(0, 0x248); // payload_offset, payload_length: no compressed payload any more
  setup.writeUInt32LE(0, 0x24c);
  // init_size: memory the kernel needs from where it is loaded before it reads the memory map.
  setup.writeUInt32LE(Math.ceil((memoryEnd - PROTECTED_MODE_BASE) / 4096) * 4096, 0x260);
  writeFileSync(resolve(output), Buffer.concat([setup, protectedMode]));
  console.log(
    `repack-kernel: ${input}: ${(flat.length / 2 ** 20).toFixed(1)} MiB image at 0x${loadAddress.toString(16)}, ` +
      `xz ${(payload.length / 2 ** 20).toFixed(1)} MiB → lz4 ${(stub.length / 2 ** 20).toFixed(1)} MiB`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}
