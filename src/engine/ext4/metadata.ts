/**
 * Which chunks of a disk hold its ext2/3/4 file systems' metadata: the manifest's `metadataChunks`
 * (repo-format.ts), fetched in the background once a machine runs. Found by walking every file
 * system on the disk through a device that notes what is read: the inode table blocks of the
 * files in use, the directories and the extent tree blocks, which is what the guest's own
 * `find /` reads, one directory at a time.
 */
import { sliceDevice, type BlockDevice } from "./block-device.ts";
import { Ext4 } from "./ext4.ts";
import { findVolumes } from "./partitions.ts";

/** Chunk indices (ascending) the walk of every ext file system on `device` read from. */
export async function metadataChunks(device: BlockDevice, chunkSize: number): Promise<number[]> {
  const chunks = new Set<number>();
  const noting: BlockDevice = {
    size: device.size,
    read: (offset, length) => {
      for (let c = Math.floor(offset / chunkSize); c * chunkSize < offset + length; c++) chunks.add(c);
      return device.read(offset, length);
    },
  };
  for (const volume of await findVolumes(device)) {
    const fs = await Ext4.open(sliceDevice(noting, volume.offset, volume.size));
    for await (const entry of fs.walk("/")) void entry; // reading is the point
  }
  return [...chunks].sort((a, b) => a - b);
}
