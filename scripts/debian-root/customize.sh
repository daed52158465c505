#!/bin/sh
# mmdebstrap customize hook for the Debian guest: $1 is the new root file system, $2 this folder.
# Puts the files under files/ in place and makes the system boot with busybox init.
set -eu
root=$1
here=$2
cp -a "$here/files/." "$root/"
chown -R 0:0 "$root/etc/sandglass" "$root/etc/inittab" "$root/etc/motd" "$root/etc/profile.d/sandglass.sh"
# busybox init (the real /sbin/init here: minbase installs no init system).
ln -sf /bin/busybox "$root/usr/sbin/init"
mkdir -p "$root/shared"
# Root logs in without a password (Debian's PAM allows an empty one).
chroot "$root" passwd -q -d root
# pam_motd prints `uname -a` before our motd; the motd says enough.
rm -f "$root/etc/update-motd.d/10-uname"
# No package lists (the guest has no Debian mirror to install from; with them `apt list` takes
# minutes in the emulator), and no apt binary cache: two runs of `apt-cache gencaches` write
# different bytes, and the image is to be the same every build. The booted snapshot builds it in
# the guest (scripts/prepare-guest.sh), so a first visit's `apt` does not.
find "$root/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -delete
rm -f "$root"/var/cache/apt/*.bin
# The guest's clock resync and the guest agent (see their sources), built with the guest's own compiler.
for tool in sandglass-clock sandglass-agent; do
  cp "$here/src/$tool.c" "$root/tmp/"
  chroot "$root" gcc -O2 -Wall -s -o "/usr/local/sbin/$tool" "/tmp/$tool.c"
  rm "$root/tmp/$tool.c"
done
# Left by the build; a guest that needs one makes its own.
: > "$root/etc/machine-id"
rm -f "$root/var/log/"*.log "$root/var/cache/debconf/"*-old "$root/var/lib/dpkg/"*-old
