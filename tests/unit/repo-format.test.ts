import { describe, expect, it } from "vitest";
import { LEGACY_HARDWARE, ManifestError, hardwareOf, parseManifest } from "../../src/engine/repo-format.ts";

const image = {
  format: "sandglass-disk",
  version: 1,
  kind: "image",
  name: "default",
  size: 8192,
  chunkSize: 4096,
  chunks: [null, null],
  sha256: "0".repeat(64),
};

describe("manifest hardware", () => {
  it("lays drives out as ranges of the disk, and refuses layouts that do not fit", () => {
    const base = { memoryBytes: 64 << 20, network: false, sharedFolder: false, bootDevice: "cdrom" };
    const drives = [
      { device: "cdrom", at: 0, bytes: 4096 },
      { device: "hda", at: 4096, bytes: 4096 },
    ];
    expect(hardwareOf(parseManifest({ ...image, hardware: { ...base, drives } })).drives).toEqual(drives);
    for (const bad of [
      [{ device: "cdrom", at: 0, bytes: 8192 }, { device: "hda", at: 4096, bytes: 4096 }],
      [{ device: "cdrom", at: 0, bytes: 4096 }, { device: "hda", at: 4096, bytes: 8192 }],
      [{ device: "hda", at: 0, bytes: 4096 }],
      [{ device: "cdrom", at: 0, bytes: 100 }],
    ]) {
      expect(() => parseManifest({ ...image, hardware: { ...base, drives: bad } })).toThrow(ManifestError);
    }
  });

  it("is the first machine shape when a manifest predates it", () => {
    expect(hardwareOf(parseManifest(image))).toEqual(LEGACY_HARDWARE);
  });

  it("round-trips, and a snapshot's RAM is the one its state was taken with", () => {
    const hardware = { memoryBytes: 256 << 20, network: true, sharedFolder: true, vgaMemoryBytes: 2 << 20, bootDevice: "hda" };
    expect(hardwareOf(parseManifest({ ...image, hardware }))).toEqual(hardware);
    // The boot device came later too: without it, the hard disk.
    const { bootDevice: _b, ...noDevice } = hardware;
    expect(hardwareOf(parseManifest({ ...image, hardware: noDevice }))).toEqual(hardware);
    expect(hardwareOf(parseManifest({ ...image, hardware: { ...hardware, bootDevice: "cdrom" } })).bootDevice).toBe("cdrom");
    // Video RAM came later: a shape without it has v86's default.
    const { vgaMemoryBytes: _, ...older } = hardware;
    expect(hardwareOf(parseManifest({ ...image, hardware: older }))).toEqual({ ...hardware, vgaMemoryBytes: 8 << 20 });
    const snapshot = parseManifest({
      ...image,
      kind: "snapshot",
      name: "a".repeat(26),
      sha256: undefined,
      parent: { kind: "image", name: "default" },
      hardware,
      machine: { pieces: [], stateBytes: 0, memoryBytes: 128 << 20 },
    });
    expect(hardwareOf(snapshot)).toEqual({ ...hardware, memoryBytes: 128 << 20 });
  });

  it("has COM2 for the guest agent only when it says so (serial1, added later: absent in older manifests)", () => {
    const hardware = { memoryBytes: 256 << 20, network: true, sharedFolder: true, vgaMemoryBytes: 2 << 20, bootDevice: "hda" };
    expect(hardwareOf(parseManifest({ ...image, hardware: { ...hardware, serial1: true } })).serial1).toBe(true);
    expect(hardwareOf(parseManifest({ ...image, hardware })).serial1).toBeUndefined();
    expect(hardwareOf(parseManifest({ ...image, hardware: { ...hardware, serial1: false } }))).toEqual(hardware);
  });

  it("refuses a malformed shape", () => {
    for (const hardware of [
      {},
      { memoryBytes: 1000, network: true, sharedFolder: false },
      { memoryBytes: 64 << 20, network: "yes", sharedFolder: false },
      { memoryBytes: 64 << 20, network: true, sharedFolder: false, vgaMemoryBytes: 3 << 20 },
      { memoryBytes: 64 << 20, network: true, sharedFolder: false, bootDevice: "usb" },
      { memoryBytes: 64 << 20, network: true, sharedFolder: false, serial1: "yes" },
    ]) {
      expect(() => parseManifest({ ...image, hardware })).toThrow(ManifestError);
    }
  });
});
