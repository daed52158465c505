#!/usr/bin/env bash
# Builds the guest disk image (if its inputs changed) and imports it into the local image
# repository that the app and the tests serve. Fast when everything is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-image.sh
npx tsx scripts/import-image.ts --image build/guest/disk.img --repo build/repo --name default \
  --description "Debian 12 kernel, busybox userland" --bios-dir build/guest
# The same disk without a booted snapshot: opening it cold-boots the kernel (tests and benchmarks).
npx tsx scripts/import-image.ts --image build/guest/disk.img --repo build/repo --name plain \
  --description "Debian 12 kernel, busybox userland (cold boot)"
# A snapshot of the image booted to an idle shell: what a new visitor resumes.
npx tsx scripts/publish-booted.ts --repo build/repo --name default --guest build/guest
# The same image as one raw file, for HTTP range readers (and the benchmark's v86 baseline).
mkdir -p build/repo/raw
[[ build/repo/raw/default.img -nt build/guest/disk.img ]] || cp --sparse=always build/guest/disk.img build/repo/raw/default.img
