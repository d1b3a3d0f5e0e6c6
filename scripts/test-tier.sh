#!/usr/bin/env bash
# Faster tiers of the suite (the whole suite is `npm test`):
#   unit       tests that start no server (no PostgreSQL, sshd, Temporal, kube-apiserver fake)
#   postgres | ssh | http | approvals | mcp | audit   one area, with its real peers
set -euo pipefail
cd "$(dirname "$0")/.."
tier="${1:?usage: scripts/test-tier.sh unit|postgres|ssh|http|approvals|mcp|audit}"
servers='backends\.ts|runDemo|gateway/demo/demo\.ts|support/(postgres|gateway|temporal|sshd|approvals-stack|fake-kube-apiserver|browser|mcp-upstream)\.ts|workflows/harness\.ts|ssh/harness\.ts|kubernetes/support\.ts|recording/backends\.ts|bin/airlock\.js'
case "$tier" in
  unit) mapfile -t files < <(grep -LE "$servers" $(find test -name '*.test.ts' | sort)) ;;
  postgres) mapfile -t files < <(find test/postgres test/cluster test/e2e/postgres-acceptance.test.ts test/enforce -name '*.test.ts' | sort) ;;
  ssh) mapfile -t files < <(find test/ssh -name '*.test.ts' | sort) ;;
  http) mapfile -t files < <(find test/http test/kubernetes -name '*.test.ts' | sort) ;;
  approvals) mapfile -t files < <(find test/approvals test/workflows test/bots test/e2e -name '*.test.ts' | sort) ;;
  mcp) mapfile -t files < <(find test/mcp -name '*.test.ts' | sort) ;;
  audit) mapfile -t files < <(find test/recording test/console test/cli -name '*.test.ts' | sort) ;;
  *) echo "unknown tier $tier" >&2; exit 2 ;;
esac
[ "${#files[@]}" -gt 0 ] || { echo "no test files for tier $tier" >&2; exit 1; }
[ "$tier" = unit ] || bash scripts/setup.sh
exec node --import tsx --import "$PWD/test/support/blocking-stdout.mjs" --test --test-concurrency=2 --test-timeout=600000 --test-force-exit "${files[@]}"
