#!/usr/bin/env bash
# Images a person might bring, for tests/e2e/own-image.spec.ts, built from Debian packages (no
# downloads of images): in build/test-images/
#   live.iso     an ISO 9660 CD booted by isolinux: the guest kernel with a busybox initramfs, a
#                root shell on the serial port that first prints "sandglass-live-cd"
#   floppy.img   a 1.44 MB FAT floppy booted by syslinux into boot-count.bs (test-images/
#                boot-count.asm, assembled with nasm), which counts its boots in a sector of the
#                floppy: each boot reads it, adds one, writes it back through the BIOS and prints
#                "floppy-boot-count=N" on the screen and the serial port; a key reboots
# Both are the same bytes for the same inputs (fixed times, serial numbers and labels), and are
# skipped while the inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE_TOOL=build-test-images
source scripts/image-lib.sh
check_image_tools
need xorriso xorriso
need nasm nasm
[[ -f /usr/lib/ISOLINUX/isolinux.bin ]] || die "missing isolinux.bin (Debian package isolinux); run: sudo bash scripts/system-deps.sh image"

OUT=build/test-images
DEBS=build/debs
WORK=build/test-images-work
INPUTS="$(cat "$0" scripts/image-lib.sh $IMAGE_LIB_INPUTS scripts/test-images/boot-count.asm | sha256sum | cut -d' ' -f1) $KPKG=$(version "$KPKG:i386") busybox-static=$(version busybox-static:i386) isolinux=$(dpkg-query -W -f='${Version}' isolinux) syslinux=$(dpkg-query -W -f='${Version}' syslinux) mtools=$(dpkg-query -W -f='${Version}' mtools) $KERNEL_TOOLS"
if [[ -f $OUT/live.iso && -f $OUT/floppy.img && -f $OUT/.stamp && $(cat "$OUT/.stamp") == "$INPUTS" ]]; then
  say "test images up to date ($OUT)"
  exit 0
fi
rm -rf "$WORK" "$OUT"
mkdir -p "$WORK" "$OUT"
unpack_kernel "$WORK/kernel"
dpkg-deb -x "$(fetch_deb busybox-static)" "$WORK/busybox"

say "live CD: kernel, busybox initramfs, isolinux"
INITRD=$WORK/initrd
mkdir -p "$INITRD"/{bin,dev,proc,sys,tmp,root,lib/modules}
cp "$WORK/busybox/bin/busybox" "$INITRD/bin/busybox"
ln -s busybox "$INITRD/bin/sh"
# The disk modules, so a live CD can write to a hard disk (an installer's job).
copy_modules "$WORK/kernel" "$INITRD" ata_piix sd_mod
cat > "$INITRD/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m 2>/dev/null; done
echo "sandglass-live-cd: booted from the CD"
cd /root
exec setsid cttyhack sh
INIT
chmod 755 "$INITRD/init"
mkdir -p "$WORK/iso/isolinux"
write_cpio "$INITRD" "$WORK/iso/initrd.img"
cp "$WORK/kernel/vmlinuz" "$WORK/iso/vmlinuz"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$WORK/iso/isolinux/"
cat > "$WORK/iso/isolinux/isolinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT live
PROMPT 0
TIMEOUT 0
LABEL live
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img console=tty0 console=ttyS0,115200 quiet loglevel=3 tsc=reliable mitigations=off nowatchdog cryptomgr.notests noisapnp
CFG
find "$WORK/iso" -exec touch -h -d "@$EPOCH" {} +
xorriso -as mkisofs -quiet -o "$OUT/live.iso" -V SANDGLASS_LIVE -r -J \
  -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
  --modification-date="$(date -u -d "@$EPOCH" +%Y%m%d%H%M%S00)" "$WORK/iso" 2>/dev/null

say "floppy: syslinux on FAT12, booting a program that counts its boots on the floppy"
# Sector 1 (after the boot sector) is reserved, outside the file system: the boot counter.
mkfs.vfat -C -R 2 -i 53474c46 "$WORK/floppy.img" 1440 >/dev/null
# mtools (mlabel, and syslinux's installer through it) dates what it writes SOURCE_DATE_EPOCH
# (image-lib.sh); mkfs.vfat does not, so the volume label is mlabel's.
export MTOOLS_SKIP_CHECK=1
mlabel -N 53474c46 -i "$WORK/floppy.img" ::SGFLOPPY
syslinux --install "$WORK/floppy.img"
nasm -f bin -o "$WORK/count.bs" scripts/test-images/boot-count.asm
# No menu: syslinux boots the boot-sector image (.bs) at once, with DL = the floppy.
printf 'SERIAL 0 115200\nDEFAULT count\nPROMPT 0\nTIMEOUT 0\nLABEL count\n  KERNEL count.bs\n' > "$WORK/syslinux.cfg"
touch -d "@$EPOCH" "$WORK/count.bs" "$WORK/syslinux.cfg"
mcopy -m -i "$WORK/floppy.img" "$WORK/syslinux.cfg" "$WORK/count.bs" ::
mv "$WORK/floppy.img" "$OUT/floppy.img"
rm -rf "$WORK"
echo "$INPUTS" > "$OUT/.stamp"
say "built $OUT/live.iso ($(stat -c %s "$OUT/live.iso") bytes, sha256 $(sha256sum "$OUT/live.iso" | cut -c1-12)) and $OUT/floppy.img (sha256 $(sha256sum "$OUT/floppy.img" | cut -c1-12))"
