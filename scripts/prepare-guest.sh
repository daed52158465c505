#!/usr/bin/env bash
# Builds the guest disk images (if their inputs changed) and imports them into the local image
# repository that the app and the tests serve. Fast when everything is up to date.
#   default      Debian 12 (build-debian.sh), 256 MiB, network, shared folder, COM2 for the guest agent; booted snapshot
#   debian-cold  the same disk without a booted snapshot: opening it cold-boots the kernel
#   small        the busybox image (build-image.sh), 64 MiB; booted snapshot (most tests use it)
#   plain        the same small disk, cold boot (tests and benchmarks)
#   --test-images  also builds the images the end-to-end tests bring (build-test-images.sh), beside
#                  the Debian build (npm test)
set -euo pipefail
cd "$(dirname "$0")/.."
test_images=false
[[ ${1:-} == --test-images ]] && test_images=true
REPO=build/repo
STAMPS=build/stamps
mkdir -p "$STAMPS"

# import_image NAME IMAGE [import-image options…]: skipped when the image file, the options and the
# import code are unchanged since the last import of NAME.
import_image() {
  local name=$1 image=$2 stamp
  shift 2
  stamp="$(stat -c '%s %Y' "$image") $* $(cat scripts/import-image.ts src/engine/repo-format.ts src/engine/ext4/*.ts | sha256sum | cut -c1-16)"
  if [[ -f $REPO/images/$name.json && -f $STAMPS/import-$name && $(cat "$STAMPS/import-$name") == "$stamp" ]]; then
    echo "image \"$name\" up to date"
    return
  fi
  npx tsx scripts/import-image.ts --image "$image" --repo "$REPO" --name "$name" "$@"
  echo "$stamp" > "$STAMPS/import-$name"
}

# Elapsed seconds on each line of the log: where a slow preparation spends its time.
started=$SECONDS
say() { echo "prepare-guest: [$((SECONDS - started)) s] $*"; }

# The small image, its imports and booted snapshot are built beside the Debian image, which mostly
# waits on downloads, dpkg and the disk. The two builds share downloaded packages (image-lib.sh's
# fetch_deb takes a lock), and write other files of the repository (chunk files are named by
# content and written under a per-process name).
small_log=build/prepare-small.log
{
  bash scripts/build-image.sh
  say "small image built"
  import_image small build/guest/disk.img --description "Debian 12 kernel, busybox userland"
  import_image plain build/guest/disk.img --description "Debian 12 kernel, busybox userland (cold boot)"
  npx tsx scripts/publish-booted.ts --repo "$REPO" --name small --guest build/guest
  say "small image and its booted snapshot in the repository"
  if $test_images; then
    bash scripts/build-test-images.sh
    say "test images built"
  fi
} >"$small_log" 2>&1 &
small_pid=$!
trap 'kill "$small_pid" 2>/dev/null || true' EXIT

bash scripts/build-debian.sh
say "Debian image built"
# 2 MiB of video RAM: the guest's consoles are text mode, and v86 keeps all of it in every state.
# COM2 (--serial1) for the guest agent that restores files (scripts/debian-root/src/sandglass-agent.c).
# --metadata-chunks: the page fetches the chunks holding the file system's metadata in the
# background, so a first `find /`, `apt` or `e2fsck` does not wait on one fetch per directory.
DEBIAN_HW=(--memory 256 --network --shared-folder --vga-memory 2 --serial1 --metadata-chunks)
import_image default build/debian/disk.img --description "Debian 12 (bookworm) with Python, gcc, git and network" \
  --bios-dir build/debian "${DEBIAN_HW[@]}"
# The same disk again under another name, beside the booted snapshot (which reads only "default").
cold_log=build/prepare-cold.log
import_image debian-cold build/debian/disk.img --description "Debian 12 (cold boot)" "${DEBIAN_HW[@]}" >"$cold_log" 2>&1 &
cold_pid=$!
trap 'kill "$small_pid" "$cold_pid" 2>/dev/null || true' EXIT
# Snapshots of the images booted to an idle shell: what a new visitor resumes.
# The Debian snapshot has apt's binary cache built (the image leaves it out: see customize.sh)
# and keeps the files of the commands a newcomer tries first in its page cache.
npx tsx scripts/publish-booted.ts --repo "$REPO" --name default --guest build/debian \
  --warm "apt-cache gencaches; sync; echo 3 > /proc/sys/vm/drop_caches; python3 -c pass; gcc --version; ls / /shared"
say "Debian image and its booted snapshot in the repository"

# Each background part's log, and its failure, once all are done.
failed=0
for part in "cold:$cold_pid:$cold_log" "small:$small_pid:$small_log"; do
  IFS=: read -r what pid log <<<"$part"
  status=0
  wait "$pid" || status=$?
  cat "$log"
  [[ $status -eq 0 ]] || { echo "preparing the $what image failed (exit $status)" >&2; failed=$status; }
done
trap - EXIT
[[ $failed -eq 0 ]] || exit "$failed"
# The images as raw files, for HTTP range readers (and the benchmark's v86 baselines).
mkdir -p "$REPO/raw"
[[ $REPO/raw/small.img -nt build/guest/disk.img ]] || cp --sparse=always build/guest/disk.img "$REPO/raw/small.img"
[[ $REPO/raw/default.img -nt build/debian/disk.img ]] || cp --sparse=always build/debian/disk.img "$REPO/raw/default.img"
