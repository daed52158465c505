#!/usr/bin/env bash
# Builds the default guest disk, build/guest/disk.img (256 MiB, sparse), from Debian packages,
# without root-only steps (no loop mounts, no chroot):
#   MBR (syslinux mbr.bin) │ p1 FAT16 32 MiB: syslinux, vmlinuz, initrd.gz │ p2 ext4: busybox userland
# The initramfs loads the disk modules (ata_piix, sd_mod, ext4), mounts /dev/sda2 and switches
# to busybox init, which runs a root shell on the serial port and on the VGA console.
# Same inputs, same bytes: fixed UUIDs, hash seed, volume id and timestamps. The BIOS files from
# Debian's seabios are put next to the image. Skips the build when the output is up to date
# (pass --force to rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=build/guest
DEBS=build/debs
WORK=build/guest-work
EPOCH=1700000000                              # every timestamp in the image
export SOURCE_DATE_EPOCH=$EPOCH E2FSPROGS_FAKE_TIME=$EPOCH
ROOT_UUID=5a6e6467-6c61-4073-8000-000000000001
HASH_SEED=5a6e6467-6c61-4073-8000-000000000002
DISK_ID=0x53474c53                            # MBR disk identifier
VFAT_ID=53474c42                              # FAT volume id
SECTORS=524288                                # 256 MiB
BOOT_START=2048 BOOT_SECTORS=65536            # 1 MiB .. 33 MiB
ROOT_START=$((BOOT_START + BOOT_SECTORS))
MODULES="ata_piix sd_mod crc32c_generic ext4"
CMDLINE="console=tty0 console=ttyS0,115200 root=/dev/sda2 rw quiet loglevel=3 init_on_free=1 tsc=reliable mitigations=off"

say() { printf 'build-image: %s\n' "$*"; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "missing '$1' (Debian package $2); run: sudo bash scripts/system-deps.sh image"; }
need mke2fs e2fsprogs; need debugfs e2fsprogs; need mkfs.vfat dosfstools; need mcopy mtools; need syslinux syslinux
need sfdisk fdisk; need depmod kmod; need modprobe kmod; need cpio cpio; need dpkg-deb dpkg; need apt-get apt
[[ -f /usr/lib/syslinux/mbr/mbr.bin ]] || die "missing syslinux's mbr.bin (Debian package syslinux-common)"
[[ -f /usr/share/seabios/bios.bin ]] || die "missing /usr/share/seabios/bios.bin (Debian package seabios)"

# The kernel the linux-image-686 metapackage points at, and the exact package versions.
KPKG=$(apt-cache depends linux-image-686:i386 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[[ -n $KPKG ]] || die "apt does not know linux-image-686:i386; run: sudo bash scripts/system-deps.sh image"
KPKG=${KPKG%:i386}
KVER=${KPKG#linux-image-}
version() { apt-cache policy "$1" | awk '/Candidate:/ { print $2 }'; }
INPUTS="$(sha256sum "$0" | cut -d' ' -f1) $KPKG=$(version "$KPKG:i386") busybox-static=$(version busybox-static:i386) seabios=$(dpkg-query -W -f='${Version}' seabios)"

if [[ ${1:-} != --force && -f $OUT/disk.img && -f $OUT/.stamp && $(cat "$OUT/.stamp") == "$INPUTS" ]]; then
  say "guest image up to date ($OUT/disk.img)"
  exit 0
fi
started=$SECONDS

say "fetching $KPKG and busybox-static (i386)"
mkdir -p "$DEBS"
fetch() { # package → path of its .deb in the cache
  local deb
  deb=$(find "$DEBS" -name "${1}_$(version "$1:i386" | sed 's/:/%3a/')_i386.deb" | head -1)
  if [[ -z $deb ]]; then
    (cd "$DEBS" && apt-get download -qq "$1:i386" 2>&1 | grep -v unsandboxed >&2 || true)
    deb=$(find "$DEBS" -name "${1}_$(version "$1:i386" | sed 's/:/%3a/')_i386.deb" | head -1)
  fi
  [[ -n $deb ]] || die "could not download $1:i386"
  echo "$deb"
}
KDEB=$(fetch "$KPKG")
BBDEB=$(fetch busybox-static)

rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
dpkg-deb -x "$KDEB" "$WORK/kernel"
dpkg-deb -x "$BBDEB" "$WORK/busybox"
BUSYBOX=$WORK/busybox/bin/busybox

say "initramfs with $MODULES"
INITRD=$WORK/initrd
mkdir -p "$INITRD"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$BUSYBOX" "$INITRD/bin/busybox"
ln -s busybox "$INITRD/bin/sh"
# Debian may ship compressed modules; busybox insmod wants plain ones.
find "$WORK/kernel/lib/modules/$KVER" -name '*.ko.xz' -exec xz -d {} +
depmod -b "$WORK/kernel" "$KVER"
: > "$INITRD/lib/modules/order"
for m in $MODULES; do modprobe -d "$WORK/kernel" -S "$KVER" --show-depends "$m"; done | awk '$1 == "insmod" { print $2 }' | while read -r ko; do
  name=$(basename "$ko")
  [[ -f $INITRD/lib/modules/$name ]] && continue
  cp "$ko" "$INITRD/lib/modules/$name"
  echo "$name" >> "$INITRD/lib/modules/order"
done
cat > "$INITRD/init" <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Some modules (crc32c-intel) only load on some CPUs: stay quiet about those.
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m 2>/dev/null; done
i=0
while [ ! -b /dev/sda2 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if mount -t ext4 -o rw /dev/sda2 /newroot; then
  mount --move /dev /newroot/dev
  umount /proc /sys
  exec switch_root /newroot /sbin/init
fi
echo "initramfs: could not mount the root file system /dev/sda2; here is a rescue shell."
exec sh
EOF
chmod 755 "$INITRD/init"

say "root file system (busybox userland)"
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,dev,proc,sys,tmp,run,root,home,mnt,var/log}
chmod 1777 "$ROOT/tmp"
chmod 700 "$ROOT/root"
cp "$BUSYBOX" "$ROOT/bin/busybox"
# The applet list comes from running busybox. A host without 32-bit support (no IA32
# emulation) asks the same busybox-static version built for its own architecture: Debian builds
# every architecture from one configuration, so the list is the same.
applets() {
  if "$BUSYBOX" --list-full 2>/dev/null; then return; fi
  local host_deb
  (cd "$DEBS" && apt-get download -qq busybox-static 2>&1 | grep -v unsandboxed >&2 || true)
  host_deb=$(find "$DEBS" -name "busybox-static_$(version busybox-static | sed 's/:/%3a/')_$(dpkg --print-architecture).deb" | head -1)
  [[ -n $host_deb ]] || die "cannot run the i386 busybox here and could not download busybox-static for $(dpkg --print-architecture)"
  dpkg-deb -x "$host_deb" "$WORK/busybox-host"
  "$WORK/busybox-host/bin/busybox" --list-full
}
applets | while read -r applet; do
  [[ $applet == bin/busybox ]] && continue
  rel=$(dirname "$applet" | sed 's|[^/][^/]*|..|g')
  ln -sf "$rel/bin/busybox" "$ROOT/$applet"
done
echo sandglass > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tsandglass\n' > "$ROOT/etc/hosts"
echo 'root:x:0:0:root:/root:/bin/sh' > "$ROOT/etc/passwd"
echo 'root:x:0:' > "$ROOT/etc/group"
echo '/dev/sda2 / ext4 rw 0 1' > "$ROOT/etc/fstab"
cat > "$ROOT/etc/motd" <<'EOF'

  Welcome to Sandglass.
  Break anything: the timeline can bring it back.

EOF
cat > "$ROOT/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
ttyS0::respawn:-/bin/sh
tty1::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
EOF
cat > "$ROOT/etc/init.d/rcS" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
grep -q " /dev " /proc/mounts || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname -F /etc/hostname
ifconfig lo 127.0.0.1 up
EOF
chmod 755 "$ROOT/etc/init.d/rcS"
cat > "$ROOT/etc/profile" <<'EOF'
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root USER=root LOGNAME=root TERM=${TERM:-linux}
export PS1='\u@\h:\w\$ '
cd "$HOME"
[ "$(tty)" = /dev/ttyS0 ] && cat /etc/motd
EOF

say "assembling the disk"
find "$INITRD" "$ROOT" -exec touch -h -d "@$EPOCH" {} +
(cd "$INITRD" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n > "$WORK/initrd.gz"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
cat > "$WORK/syslinux.cfg" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND $CMDLINE
EOF
touch -d "@$EPOCH" "$WORK/vmlinuz" "$WORK/initrd.gz" "$WORK/syslinux.cfg"

DISK=$WORK/disk.img
rm -f "$DISK"
truncate -s $((SECTORS * 512)) "$DISK"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$DISK" conv=notrunc status=none
sfdisk --quiet "$DISK" <<EOF
label: dos
label-id: $DISK_ID
unit: sectors
start=$BOOT_START, size=$BOOT_SECTORS, type=6, bootable
start=$ROOT_START, type=83
EOF

BOOT=$WORK/boot.img
mkfs.vfat -F 16 -n SANDGLASS -i "$VFAT_ID" --invariant -C "$BOOT" $((BOOT_SECTORS / 2)) >/dev/null
mcopy -m -i "$BOOT" "$WORK/vmlinuz" "$WORK/initrd.gz" "$WORK/syslinux.cfg" ::/
syslinux --install "$BOOT"
dd if="$BOOT" of="$DISK" bs=512 seek=$BOOT_START conv=notrunc,sparse status=none

ROOTFS=$WORK/root.img
truncate -s $(((SECTORS - ROOT_START) * 512)) "$ROOTFS"
# Initialise inode tables and journal now: lazy init would make the guest write them on first boot.
mke2fs -q -t ext4 -L sandglass -U "$ROOT_UUID" -m 0 \
  -E "hash_seed=$HASH_SEED,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard" \
  -d "$ROOT" "$ROOTFS"
# mke2fs copies each file's ctime, which no tool can set on the source tree: pin it here.
(cd "$ROOT" && find . | sed 's|^\.|/|; s|^//|/|' | LC_ALL=C sort | sed "s|.*|sif \"&\" ctime @$EPOCH|") > "$WORK/ctime.cmds"
debugfs -w -f "$WORK/ctime.cmds" "$ROOTFS" >/dev/null 2>&1 || die "debugfs could not pin timestamps"
dd if="$ROOTFS" of="$DISK" bs=512 seek=$ROOT_START conv=notrunc,sparse status=none

mv "$DISK" "$OUT/disk.img"
cp /usr/share/seabios/bios.bin "$OUT/seabios.bin"
cp /usr/share/seabios/vgabios-stdvga.bin "$OUT/vgabios.bin"
echo "$INPUTS" > "$OUT/.stamp"
rm -rf "$WORK"
say "built $OUT/disk.img ($KPKG) in $((SECONDS - started)) s; sha256 $(sha256sum "$OUT/disk.img" | cut -c1-16)…"
