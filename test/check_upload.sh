#!/usr/bin/env bash
# ugate-serve's POST /upload in constant memory: a 512 MiB chunked upload, then 128 MiB and
# 1 GiB with Content-Length, each answered with its size and CRC-32 (ugate-upload checks
# both against its own zlib), the server's peak resident memory growing by at most 32 MiB
# over what it held before the first. Then one byte over --max-upload-bytes is refused.
# Loopback only; every wait is bounded.
set -u
serve=${1:?usage: check_upload.sh UGATE_SERVE UGATE_UPLOAD BACKEND PORT}
upload=${2:?} backend=${3:?} port=${4:?}
fail() { echo "check_upload: $*"; kill -KILL "$pid" 2>/dev/null; exit 1; }
"$serve" --backend "$backend" --threads 2 --port "$port" --quiet >/dev/null 2>&1 &
pid=$!
for _ in $(seq 50); do
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && break
    sleep 0.1
done
if ! kill -0 "$pid" 2>/dev/null; then
    [ "$backend" = uring ] && { echo "check_upload: SKIP: ugate-serve --backend uring did not start (io_uring refused?)"; exit 77; }
    fail "ugate-serve did not start"
fi
# Peak growth is measured from the first upload's start, over all three.
base=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
for args in "--chunked --bytes $((512 << 20))" "--bytes $((128 << 20))" "--bytes $((1 << 30))"; do
    # shellcheck disable=SC2086 # args is a list
    out=$(timeout 120 "$upload" --port "$port" $args --pid "$pid") || fail "upload $args: $out"
    echo "check_upload: $backend $out"
done
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
growth=$((hwm - base))
echo "check_upload: $backend peak growth over the three: ${growth} KiB"
[ "$growth" -le $((32 << 10)) ] || fail "the server grew by $growth KiB (over 32 MiB)"
out=$(timeout 60 "$upload" --port "$port" --bytes $(((1 << 30) + 1)) 2>&1) && fail "1 GiB + 1 was accepted: $out"
[[ $out == *"HTTP/1.1 413 "* ]] || fail "1 GiB + 1: no 413: $out"
kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "ugate-serve did not exit after SIGTERM"
wait "$pid" || fail "ugate-serve exited $?"
echo "check_upload: $backend ok"
