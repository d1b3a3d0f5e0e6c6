#!/usr/bin/env bash
# The whole test suite: installs what the tests need (npm deps, psql, the Temporal dev server),
# type-checks, lints (Biome), then runs every test in test/ with node's test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc --noEmit -p tsconfig.json
npx biome lint
mapfile -t files < <(find test -name '*.test.ts' | sort)
exec node --import tsx --import "$PWD/test/support/blocking-stdout.mjs" --test --test-concurrency=2 --test-timeout=600000 --test-force-exit "${files[@]}"
