#!/usr/bin/env bash
# `npm test`: every check, in the order that fails fastest.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d node_modules ]] || npm ci
bash scripts/system-deps.sh all
# Each step says when it began (seconds since the start): where a slow run spent its time.
step() { printf '\n\033[1m== %s\033[0m [%d s]\n' "$*" "$SECONDS"; }

# The guest images (and the images the tests bring) build meanwhile, mostly waiting on package
# downloads, dpkg and the disk: no check before the end-to-end tests reads build/. Their output is
# shown when they are done.
mkdir -p build
prepare_log=build/prepare-guest.log
bash scripts/prepare-guest.sh --test-images >"$prepare_log" 2>&1 &
prepare_pid=$!
trap 'kill "$prepare_pid" 2>/dev/null || true' EXIT

step "type-check"
npx svelte-check --tsconfig ./tsconfig.json --fail-on-warnings --output human
npx tsc --noEmit -p tsconfig.json
step "lint"
npx eslint --max-warnings 0 .
step "unit and server tests"
npx vitest run
step "guest image and repository"
status=0
wait "$prepare_pid" || status=$?
trap - EXIT
cat "$prepare_log"
[[ $status -eq 0 ]] || { echo "preparing the guest images failed (exit $status)" >&2; exit "$status"; }
step "build"
npx vite build --logLevel error
step "end-to-end (Chromium, real guest)"
npx playwright test
step "done"
