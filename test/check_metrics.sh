#!/usr/bin/env bash
# The exposition through Prometheus's own linter: test_metrics (epoll, so that it runs where
# io_uring is refused) writes what ug_server_metrics produced after known traffic, and
# `promtool check metrics` must accept it without a complaint. Exit 77 without promtool.
set -u
bin=${1:?usage: check_metrics.sh TEST_METRICS}
command -v promtool >/dev/null || { echo "check_metrics: SKIP: no promtool (apt-get install prometheus)"; exit 77; }
out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
UGATE_METRICS_DUMP=$out "$bin" epoll >/dev/null 2>&1 || { echo "check_metrics: $bin failed"; exit 1; }
[ -s "$out" ] || { echo "check_metrics: no exposition written"; exit 1; }
# promtool prints lint problems and exits non-zero on a parse error; both fail the check
problems=$(promtool check metrics <"$out" 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$problems" ]; then
    echo "check_metrics: promtool (rc $rc):"
    echo "$problems"
    exit 1
fi
echo "check_metrics: $(grep -c '^# TYPE' "$out") metric families, promtool clean"
