#!/usr/bin/env bash
# `npm test`: every check, in the order that fails fastest.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d node_modules ]] || npm ci
bash scripts/system-deps.sh all
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step "type-check"
npx svelte-check --tsconfig ./tsconfig.json --fail-on-warnings --output human
npx tsc --noEmit -p tsconfig.json
step "lint"
npx eslint --max-warnings 0 .
step "unit and server tests"
npx vitest run
step "guest image and repository"
bash scripts/prepare-guest.sh
step "build"
npx vite build --logLevel error
step "end-to-end (Chromium, real guest)"
npx playwright test
