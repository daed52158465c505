# Shared steps of the guest image builds (sourced by build-image.sh and build-debian.sh).
# Both images have the same shape, built without loop mounts:
#   MBR (syslinux mbr.bin) │ p1 FAT16 32 MiB: syslinux, vmlinuz, initrd.img │ p2 ext4: the root file system
# The initramfs loads the disk modules, mounts /dev/sda2 and switches to its /sbin/init.
# Same inputs, same bytes: fixed UUIDs, hash seed, volume id and timestamps.

EPOCH=1700000000                              # every timestamp in the image
export SOURCE_DATE_EPOCH=$EPOCH E2FSPROGS_FAKE_TIME=$EPOCH
ROOT_UUID=5a6e6467-6c61-4073-8000-000000000001
HASH_SEED=5a6e6467-6c61-4073-8000-000000000002
DISK_ID=0x53474c53                            # MBR disk identifier
VFAT_ID=53474c42                              # FAT volume id
BOOT_START=2048 BOOT_SECTORS=65536            # 1 MiB .. 33 MiB
ROOT_START=$((BOOT_START + BOOT_SECTORS))
INITRD_MODULES="ata_piix sd_mod crc32c_generic ext4"
# nowatchdog: after a resume or rewind the guest's lockup detectors see the time the machine was
# paused as a stuck CPU ("BUG: soft lockup"); rcu_cpu_stall_suppress silences RCU's version of it.
# cryptomgr.notests, noisapnp: the crypto self-tests and the ISA PnP probe were the slowest steps of
# a cold boot in the emulator (initcall_debug: ~10 s and ~0.7 s of ~36 s to the shell).
KERNEL_ARGS="console=tty0 console=ttyS0,115200 root=/dev/sda2 rw quiet loglevel=3 init_on_free=1 tsc=reliable mitigations=off nowatchdog rcupdate.rcu_cpu_stall_suppress=1 cryptomgr.notests noisapnp"

say() { printf '%s: %s\n' "$IMAGE_TOOL" "$*"; }
die() { printf '%s: %s\n' "$IMAGE_TOOL" "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "missing '$1' (Debian package $2); run: sudo bash scripts/system-deps.sh image"; }

check_image_tools() {
  need mke2fs e2fsprogs; need debugfs e2fsprogs; need mkfs.vfat dosfstools; need mcopy mtools; need syslinux syslinux
  need sfdisk fdisk; need depmod kmod; need modprobe kmod; need cpio cpio; need dpkg-deb dpkg; need apt-get apt
  need xz xz-utils; need lz4 lz4; need nasm nasm; need flock util-linux
  [[ -f /usr/lib/syslinux/mbr/mbr.bin ]] || die "missing syslinux's mbr.bin (Debian package syslinux-common)"
  [[ -f /usr/share/seabios/bios.bin ]] || die "missing /usr/share/seabios/bios.bin (Debian package seabios)"
  # The kernel the linux-image-686 metapackage points at.
  KPKG=$(apt-cache depends linux-image-686:i386 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  [[ -n $KPKG ]] || die "apt does not know linux-image-686:i386; run: sudo bash scripts/system-deps.sh image"
  KPKG=${KPKG%:i386}
  KVER=${KPKG#linux-image-}
  # The tools that repack the kernel: their versions are part of each build's inputs.
  KERNEL_TOOLS="lz4=$(dpkg-query -W -f='${Version}' lz4) nasm=$(dpkg-query -W -f='${Version}' nasm)"
}

version() { apt-cache policy "$1" | awk '/Candidate:/ { print $2 }'; }
# versions PACKAGE… → "package=version" of each i386 package, in one apt-cache call (one call per
# package takes a second or two each).
versions() {
  apt-cache policy "${@/%/:i386}" | awk '/^[^ ].*:$/ { sub(":$", ""); name = $1 } /Candidate:/ { printf "%s=%s ", name, $2 }'
}

# fetch_deb PACKAGE → path of its i386 .deb in $DEBS (downloaded once, kept for later builds).
fetch_deb() {
  local deb pattern lock
  pattern="${1}_$(version "$1:i386" | sed 's/:/%3a/')_i386.deb"
  mkdir -p "$DEBS"
  # Looked for and downloaded under a lock: prepare-guest.sh builds the images at once, they share
  # packages, and a file another build is downloading must not be taken half-written.
  exec {lock}>"$DEBS/.download-lock"
  flock "$lock"
  deb=$(find "$DEBS" -name "$pattern" | head -1)
  if [[ -z $deb ]]; then
    (cd "$DEBS" && apt-get download -qq "$1:i386" 2>&1 | grep -v unsandboxed >&2 || true)
    deb=$(find "$DEBS" -name "$pattern" | head -1)
  fi
  exec {lock}>&-
  [[ -n $deb ]] || die "could not download $1:i386"
  echo "$deb"
}

# Files besides this one that every image build reads: part of each build's inputs.
IMAGE_LIB_INPUTS="scripts/kernel/lz4-boot.asm scripts/kernel/repack-kernel.ts"

# unpack_kernel DIR: the kernel package unpacked in DIR, its modules uncompressed and indexed, and
# DIR/vmlinuz: the kernel repacked to unpack fast in the emulator (scripts/kernel/repack-kernel.ts:
# inflating Debian's xz'd kernel took ~6 s of a ~22 s cold boot, LZ4 takes well under one).
unpack_kernel() {
  local deb repacked
  deb=$(fetch_deb "$KPKG")
  dpkg-deb -x "$deb" "$1"
  # Debian may ship compressed modules; busybox insmod wants plain ones.
  find "$1/lib/modules/$KVER" -name '*.ko.xz' -exec xz -d {} +
  depmod -b "$1" "$KVER"
  # Repacked once per kernel package, repacker and tools (~4 s; every image build needs it), kept
  # beside the downloaded packages.
  repacked="$DEBS/vmlinuz-$KVER-$({ basename "$deb"; echo "$KERNEL_TOOLS"; cat $IMAGE_LIB_INPUTS; } | sha256sum | cut -c1-16)"
  if [[ ! -f $repacked ]]; then
    # Named per process: two image builds at once may both repack it (the same bytes).
    npx tsx scripts/kernel/repack-kernel.ts "$1/boot/vmlinuz-$KVER" "$repacked.tmp-$$"
    mv "$repacked.tmp-$$" "$repacked"
  fi
  cp "$repacked" "$1/vmlinuz"
}

# copy_modules KERNEL_DIR INITRD MODULE…: the modules and what they depend on, into
# INITRD/lib/modules, each once, with INITRD/lib/modules/order listing them in load order.
copy_modules() {
  local kernel=$1 initrd=$2 ko name
  shift 2
  mkdir -p "$initrd/lib/modules"
  : > "$initrd/lib/modules/order"
  for m in "$@"; do modprobe -d "$kernel" -S "$KVER" --show-depends "$m"; done | awk '$1 == "insmod" { print $2 }' | while read -r ko; do
    name=$(basename "$ko")
    [[ -f $initrd/lib/modules/$name ]] && continue
    cp "$ko" "$initrd/lib/modules/$name"
    echo "$name" >> "$initrd/lib/modules/order"
  done
}

# make_initramfs KERNEL_DIR BUSYBOX OUT: a busybox initramfs that loads $INITRD_MODULES (and
# their dependencies), mounts /dev/sda2 and switches to its /sbin/init. Stored uncompressed (see
# write_cpio).
make_initramfs() {
  local kernel=$1 busybox=$2 out=$3 initrd
  initrd=$(mktemp -d)
  mkdir -p "$initrd"/{bin,dev,proc,sys,newroot,lib/modules}
  cp "$busybox" "$initrd/bin/busybox"
  ln -s busybox "$initrd/bin/sh"
  copy_modules "$kernel" "$initrd" $INITRD_MODULES
  cat > "$initrd/init" <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Some modules (crc32c-intel) only load on some CPUs: stay quiet about those.
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m 2>/dev/null; done
i=0
while [ ! -b /dev/sda2 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
# noatime: reading a file must not write to the disk (each write is logged and checkpointed).
if mount -t ext4 -o rw,noatime /dev/sda2 /newroot; then
  mount --move /dev /newroot/dev
  umount /proc /sys
  exec switch_root /newroot /sbin/init
fi
echo "initramfs: could not mount the root file system /dev/sda2; here is a rescue shell."
exec sh
EOF
  chmod 755 "$initrd/init"
  write_cpio "$initrd" "$out"
  rm -rf "$initrd"
}

# write_cpio DIR OUT: DIR as a reproducible newc archive, not compressed: the emulated CPU took
# ~10 s of a ~30 s cold boot to inflate a gzip'd 4 MiB initramfs, while the repository stores the
# chunks gzip'd anyway (a download is no larger).
write_cpio() {
  find "$1" -exec touch -h -d "@$EPOCH" {} +
  (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --reproducible --quiet) > "$2"
}

# assemble_disk OUT SECTORS VMLINUZ INITRD ROOTDIR [MKE2FS_OPTIONS…]: the partitioned disk.
assemble_disk() {
  local out=$1 sectors=$2 vmlinuz=$3 initrd=$4 root=$5 work
  shift 5
  work=$(mktemp -d -p "$(dirname "$out")")
  cp "$vmlinuz" "$work/vmlinuz"
  cp "$initrd" "$work/initrd.img"
  cat > "$work/syslinux.cfg" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $KERNEL_ARGS
EOF
  touch -d "@$EPOCH" "$work/vmlinuz" "$work/initrd.img" "$work/syslinux.cfg"

  rm -f "$out"
  truncate -s $((sectors * 512)) "$out"
  dd if=/usr/lib/syslinux/mbr/mbr.bin of="$out" conv=notrunc status=none
  sfdisk --quiet "$out" <<EOF
label: dos
label-id: $DISK_ID
unit: sectors
start=$BOOT_START, size=$BOOT_SECTORS, type=6, bootable
start=$ROOT_START, type=83
EOF
  mkfs.vfat -F 16 -n SANDGLASS -i "$VFAT_ID" --invariant -C "$work/boot.img" $((BOOT_SECTORS / 2)) >/dev/null
  mcopy -m -i "$work/boot.img" "$work/vmlinuz" "$work/initrd.img" "$work/syslinux.cfg" ::/
  syslinux --install "$work/boot.img"
  dd if="$work/boot.img" of="$out" bs=512 seek=$BOOT_START conv=notrunc,sparse status=none

  truncate -s $(((sectors - ROOT_START) * 512)) "$work/root.img"
  # Initialise inode tables and journal now: lazy init would make the guest write them on first boot.
  mke2fs -q -t ext4 -L sandglass -U "$ROOT_UUID" -m 0 \
    -E "hash_seed=$HASH_SEED,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard" \
    "$@" -d "$root" "$work/root.img"
  # mke2fs copies each file's ctime, which no tool can set on the source tree, and its atime, which
  # reading it during the build moved: pin both here.
  (cd "$root" && find . | sed 's|^\.|/|; s|^//|/|' | LC_ALL=C sort | sed "s|.*|sif \"&\" ctime @$EPOCH\nsif \"&\" atime @$EPOCH|") > "$work/ctime.cmds"
  debugfs -w -f "$work/ctime.cmds" "$work/root.img" >/dev/null 2>&1 || die "debugfs could not pin timestamps"
  dd if="$work/root.img" of="$out" bs=512 seek=$ROOT_START conv=notrunc,sparse status=none
  rm -rf "$work"
}

# copy_bios DIR: SeaBIOS and its VGA BIOS beside the image.
copy_bios() {
  cp /usr/share/seabios/bios.bin "$1/seabios.bin"
  cp /usr/share/seabios/vgabios-stdvga.bin "$1/vgabios.bin"
}
