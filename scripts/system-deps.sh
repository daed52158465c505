#!/usr/bin/env bash
# Installs the Debian packages Sandglass needs on this machine, if any is missing:
# the guest image tools (build-image.sh, build-debian.sh) and Chromium (end-to-end tests, benchmarks).
# Usage: scripts/system-deps.sh [image|browser|all]   (default: all)
set -euo pipefail
want=${1:-all}

# arch-test: mmdebstrap needs it for an i386 root and only recommends it (skipped by --no-install-recommends).
# lz4, nasm: the guest kernel is repacked to unpack fast (scripts/kernel/); nasm also assembles the
# test floppy's boot counter (scripts/test-images/boot-count.asm).
declare -A cmd_pkg=(
  [mkfs.vfat]=dosfstools [mcopy]=mtools [mke2fs]=e2fsprogs [sfdisk]=fdisk
  [depmod]=kmod [cpio]=cpio [syslinux]=syslinux [debugfs]=e2fsprogs [xz]=xz-utils [lz4]=lz4 [nasm]=nasm [mmdebstrap]=mmdebstrap [arch-test]=arch-test
)
missing=()
if [[ $want == image || $want == all ]]; then
  for c in "${!cmd_pkg[@]}"; do command -v "$c" >/dev/null 2>&1 || missing+=("${cmd_pkg[$c]}"); done
  [[ -f /usr/share/seabios/bios.bin ]] || missing+=(seabios)
  [[ -f /usr/lib/syslinux/mbr/mbr.bin ]] || missing+=(syslinux-common)
  # The test images a person might bring (build-test-images.sh): a CD needs isolinux and xorriso.
  command -v xorriso >/dev/null 2>&1 || missing+=(xorriso)
  [[ -f /usr/lib/ISOLINUX/isolinux.bin ]] || missing+=(isolinux)
fi
if [[ $want == browser || $want == all ]]; then
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
fi
# build-image.sh downloads the i386 kernel and busybox: apt must know the i386 packages.
needs_i386=0
if [[ $want == image || $want == all ]] && ! apt-cache show linux-image-686:i386 >/dev/null 2>&1; then
  needs_i386=1
fi
[[ ${#missing[@]} -eq 0 && $needs_i386 -eq 0 ]] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ $(id -u) -ne 0 ]]; then
  [[ ${#missing[@]} -gt 0 ]] && echo "Sandglass needs these Debian packages: ${missing[*]}" >&2
  echo "Run as root: sudo bash scripts/system-deps.sh $want" >&2
  exit 1
fi
[[ ${#missing[@]} -gt 0 ]] && echo "Installing Debian packages: ${missing[*]}"
# The guest kernel and busybox are i386 packages, fetched later by build-image.sh.
dpkg --print-foreign-architectures | grep -qx i386 || dpkg --add-architecture i386
# A mirror that is mid-sync can fail one index; the packages we need are still found.
apt-get update -q || echo "apt-get update reported errors; continuing" >&2
if [[ ${#missing[@]} -gt 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
