#!/usr/bin/env bash
# Installs what is missing, then runs the whole test suite (root needed: tests ptrace real
# processes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
deno task test "$@"
