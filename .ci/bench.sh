#!/usr/bin/env bash
# CI stage: a short smoke of the benchmark harness (one round, two seconds,
# 64 connections; no targets asserted) and the Go benchmarks of the request
# path, once. Real measurements: bench/run.sh (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

bash bench/run.sh --quick
go test -run '^$' -bench . -benchtime 2000x -benchmem ./proxy/
