#!/usr/bin/env bash
# Builds the default guest, build/debian/disk.img: Debian 12 (bookworm) i386 on a 2 GiB disk
# (sparse), from Debian packages with mmdebstrap (run as root; no prebuilt image is downloaded).
# Layout, kernel and initramfs as the small image (scripts/image-lib.sh); the root file system is
# a minbase Debian with the packages below and the kernel's modules.
#
# Boot: busybox init (fast in the emulator, no systemd) runs /etc/sandglass/boot (mounts, network,
# the shared folder), a root shell on the serial console and a login prompt on the VGA console.
# Network: the emulator's virtio NIC at the fixed address v86's virtual router hands out
# (192.168.86.100, router and DNS 192.168.86.1). Shared folder: v86's 9p device at /shared.
#
# Downloaded packages are kept in build/debs/debian (a rebuild downloads nothing it has). Skips
# the build when its inputs (this script, image-lib.sh, package versions) are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE_TOOL=build-debian
source scripts/image-lib.sh

OUT=build/debian
DEBS=build/debs
CACHE=$DEBS/debian
WORK=build/debian-work
SECTORS=4194304                               # 2 GiB
SUITE=bookworm
PACKAGES=(
  bash-completion busybox ca-certificates curl e2fsprogs file gcc git htop iproute2 iputils-ping kmod
  less libc6-dev make man-db manpages nano netcat-openbsd procps python3 vim-tiny wget xz-utils
)
check_image_tools
need mmdebstrap mmdebstrap
[[ $(id -u) -eq 0 ]] || die "mmdebstrap builds the Debian root file system as root; run: sudo npm start (or sudo $0)"
# The host's own Debian sources (mmdebstrap pastes a file given as the mirror).
SOURCES=/etc/apt/sources.list.d/debian.sources
[[ -f $SOURCES ]] || SOURCES=/etc/apt/sources.list
[[ -f $SOURCES ]] || die "no Debian sources list on this machine (/etc/apt/sources.list.d/debian.sources)"

# The inputs: scripts and the versions apt would install (the host's i386 package lists).
INPUTS="$(cat "$0" scripts/image-lib.sh $IMAGE_LIB_INPUTS $(find scripts/debian-root -type f | LC_ALL=C sort) | sha256sum | cut -d' ' -f1) $KPKG=$(version "$KPKG:i386") $(versions "${PACKAGES[@]}")seabios=$(dpkg-query -W -f='${Version}' seabios) $KERNEL_TOOLS"
if [[ ${1:-} != --force && -f $OUT/disk.img && -f $OUT/.stamp && $(cat "$OUT/.stamp") == "$INPUTS" ]]; then
  say "Debian image up to date ($OUT/disk.img)"
  exit 0
fi
started=$SECONDS
# mmdebstrap mounts /proc, /sys and /dev inside the root it builds; a build killed mid-way could
# leave them mounted, and removing the work folder would then reach into the host's.
if [[ -d $WORK ]] && findmnt -rno TARGET | grep -q "^$(realpath "$WORK")/"; then
  die "a stopped build left file systems mounted under $WORK (see findmnt); unmount them, then run again"
fi
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT" "$CACHE"

# The emulator's virtio devices (network card, shared folder) load with the disk's modules: busybox
# insmod in the initramfs is seconds faster in the emulator than kmod's modprobe after it.
INITRD_MODULES="$INITRD_MODULES virtio_pci virtio_net 9pnet_virtio 9p"
say "kernel $KPKG and initramfs"
unpack_kernel "$WORK/kernel"
dpkg-deb -x "$(fetch_deb busybox-static)" "$WORK/busybox"
make_initramfs "$WORK/kernel" "$WORK/busybox/bin/busybox" "$WORK/initrd.img"

say "Debian $SUITE i386 root file system ($(ls "$CACHE" | wc -l) packages cached)"
ROOT=$WORK/root
CONFIG=$(realpath scripts/debian-root)
mmdebstrap --quiet --variant=minbase --architectures=i386 --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --skip=essential/unlink --skip=cleanup/apt/lists --skip=cleanup/apt/cache \
  --setup-hook="mkdir -p \"\$1/var/cache/apt/archives\"" \
  --setup-hook="sync-in $(realpath "$CACHE") /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $(realpath "$CACHE")" \
  --customize-hook="rm -f \"\$1\"/var/cache/apt/archives/*.deb" \
  --customize-hook="$CONFIG/customize.sh \"\$1\" $CONFIG" \
  "$SUITE" "$ROOT" "$SOURCES"
rm -f "$CACHE"/lock; rm -rf "$CACHE"/partial

# The kernel's modules (network, shared folder, everything else modprobe may want), compressed
# as Debian ships them, and their index.
mkdir -p "$ROOT/usr/lib/modules"
dpkg-deb -x "$(fetch_deb "$KPKG")" "$WORK/kernel-packed"
cp -a "$WORK/kernel-packed/lib/modules/$KVER" "$ROOT/usr/lib/modules/"
depmod -b "$ROOT" "$KVER"

say "assembling the disk ($(du -sm "$ROOT" | cut -f1) MiB of files)"
find "$ROOT" -newermt "@$EPOCH" -exec touch -h -d "@$EPOCH" {} +
assemble_disk "$WORK/disk.img" "$SECTORS" "$WORK/kernel/vmlinuz" "$WORK/initrd.img" "$ROOT"
mv "$WORK/disk.img" "$OUT/disk.img"
copy_bios "$OUT"
echo "$INPUTS" > "$OUT/.stamp"
rm -rf "$WORK"
say "built $OUT/disk.img in $((SECONDS - started)) s; sha256 $(sha256sum "$OUT/disk.img" | cut -c1-16)…"
