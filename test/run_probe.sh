#!/usr/bin/env bash
# The shutdown probe as a test: RUNS SIGTERMs of ugate-serve under mixed load; the probe
# exits non-zero if any request was lost, truncated, hung, or served after the gate.
# usage: run_probe.sh PROBE SERVE BACKEND PORT RUNS [THREADS]
set -u
probe=$1 serve=$2 backend=$3 port=$4 runs=$5 threads=${6:-1}
if [ "$backend" = uring ]; then
    out=$(timeout 5 "$serve" --backend uring --port 0 --quiet 2>&1 & pid=$!; sleep 0.3; kill $pid 2>/dev/null; wait $pid 2>/dev/null)
    case "$out" in
    *"backend io_uring"*) ;;
    *) echo "SKIP: io_uring refused here: $out"; exit 77 ;;
    esac
fi
exec "$probe" --port "$port" --runs "$runs" --quiet -- "$serve" --backend "$backend" --threads "$threads" \
    --port "$port" --quiet
