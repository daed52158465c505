#!/usr/bin/env bash
# `npm start`: everything a fresh machine needs, then the app at http://127.0.0.1:${PORT:-8080}/.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d node_modules ]] || npm ci
bash scripts/system-deps.sh image
bash scripts/prepare-guest.sh
npx vite build --logLevel error
exec npx tsx server/main.ts --repo build/repo --app dist --port "${PORT:-8080}"
