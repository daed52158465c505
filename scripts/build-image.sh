#!/usr/bin/env bash
# Builds the small guest disk, build/guest/disk.img (256 MiB, sparse), from Debian packages,
# without root-only steps: Debian's kernel and a busybox userland (a root shell on the serial port
# and on the VGA console). The default image is the Debian one (build-debian.sh); this one boots
# and checkpoints faster, for tests where a real distribution adds nothing.
# Layout and reproducibility: scripts/image-lib.sh. The BIOS files from Debian's seabios are put
# next to the image. Skips the build when the output is up to date (pass --force to rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE_TOOL=build-image
source scripts/image-lib.sh

OUT=build/guest
DEBS=build/debs
WORK=build/guest-work
SECTORS=524288                                # 256 MiB
check_image_tools
INPUTS="$(cat "$0" scripts/image-lib.sh $IMAGE_LIB_INPUTS | sha256sum | cut -d' ' -f1) $KPKG=$(version "$KPKG:i386") busybox-static=$(version busybox-static:i386) seabios=$(dpkg-query -W -f='${Version}' seabios) $KERNEL_TOOLS"

if [[ ${1:-} != --force && -f $OUT/disk.img && -f $OUT/.stamp && $(cat "$OUT/.stamp") == "$INPUTS" ]]; then
  say "guest image up to date ($OUT/disk.img)"
  exit 0
fi
started=$SECONDS

say "fetching $KPKG and busybox-static (i386)"
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
unpack_kernel "$WORK/kernel"
dpkg-deb -x "$(fetch_deb busybox-static)" "$WORK/busybox"
BUSYBOX=$WORK/busybox/bin/busybox
say "initramfs with $INITRD_MODULES"
make_initramfs "$WORK/kernel" "$BUSYBOX" "$WORK/initrd.img"

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
find "$ROOT" -exec touch -h -d "@$EPOCH" {} +
DISK=$WORK/disk.img
assemble_disk "$DISK" "$SECTORS" "$WORK/kernel/vmlinuz" "$WORK/initrd.img" "$ROOT"
mv "$DISK" "$OUT/disk.img"
copy_bios "$OUT"
echo "$INPUTS" > "$OUT/.stamp"
rm -rf "$WORK"
say "built $OUT/disk.img ($KPKG) in $((SECONDS - started)) s; sha256 $(sha256sum "$OUT/disk.img" | cut -c1-16)…"
