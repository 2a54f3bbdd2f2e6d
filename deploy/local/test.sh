#!/usr/bin/env bash
# test.sh — the project's test command: brings the local stack up (Kafka, registry, SecantusDB)
# and runs every test against it. Extra arguments go to `cargo test`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
eval "$(deploy/local/stack.sh up)"
exec cargo test "$@"
