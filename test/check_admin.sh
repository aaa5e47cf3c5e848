#!/usr/bin/env bash
# ugate-serve --admin: GET /metrics on the admin port says the gate is open, then, after
# SIGTERM with a slow request in flight, that it is draining with that request in flight
# (and GET /debug/conns shows it, deferred, with the drain's deadline), while the public port
# already refuses; the slow request is answered, the process exits 0, the admin port goes
# with it, and --access-log has a line for each public request and none for the admin's.
# Loopback only; every wait is bounded.
set -u
serve=${1:?usage: check_admin.sh UGATE_SERVE BACKEND PORT}
backend=${2:?} port=${3:?}
admin=$((port + 1))
fail() { echo "check_admin: $*"; kill -KILL "$pid" 2>/dev/null; exit 1; }
get() { # port path -> the response (head and body), or nothing; at most 3 s
    timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
        printf 'GET $2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' >&3; cat <&3" 2>/dev/null
}
slow=$(mktemp) alog=$(mktemp)
trap 'rm -f "$slow" "$alog"' EXIT
"$serve" --backend "$backend" --threads 2 --port "$port" --admin "127.0.0.1:$admin" --quiet \
    --access-log "$alog" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 50); do get "$admin" /metrics | grep -q '^ugate_loops 2' && break; sleep 0.1; done
if ! kill -0 "$pid" 2>/dev/null && [ "$backend" = uring ]; then
    echo "check_admin: SKIP: ugate-serve --backend uring did not start (io_uring refused?)"
    exit 77
fi
m=$(get "$admin" /metrics)
[[ $m == *'ugate_gate_state{state="open"} 1'* ]] || fail "no open gate in /metrics: ${m:0:200}"
[[ $m == *"Content-Type: text/plain; version=0.0.4"* ]] || fail "wrong content type"
[[ $(get "$port" /) == *"Hello, World!"* ]] || fail "main port does not answer"
get "$port" "/sleep?ms=1500" >"$slow" &
slow_pid=$!
for _ in $(seq 50); do get "$admin" /metrics | grep -q '^ugate_requests_inflight 1' && break; sleep 0.05; done
kill -TERM "$pid"
for _ in $(seq 50); do get "$admin" /metrics | grep -q 'ugate_gate_state{state="draining"} 1' && break; sleep 0.05; done
m=$(get "$admin" /metrics)
[[ $m == *'ugate_gate_state{state="draining"} 1'* ]] || fail "not draining after SIGTERM: ${m:0:300}"
[[ $m == *$'\nugate_requests_inflight 1'* ]] || fail "the slow request is not in flight during the drain"
d=$(get "$admin" /debug/conns)
[[ $d == *"Content-Type: application/json"* ]] || fail "/debug/conns: wrong content type"
[[ $d == *'{"gate":{"state":"draining"'* ]] || fail "/debug/conns: not draining: ${d:0:300}"
[[ $d == *'"drain":{"elapsed_ms":'* ]] || fail "/debug/conns: no drain figures"
[[ $d == *'"target":"/sleep?ms=1500","age_ms":'*'"deferred":true'* ]] ||
    fail "/debug/conns: the slow request is not listed: ${d:0:600}"
[ -z "$(get "$port" /)" ] || fail "the public port still answers after the gate closed"
wait "$slow_pid"
[[ $(cat "$slow") == *"200 OK"* ]] || fail "the slow request was not answered: $(head -c 100 "$slow")"
rc=0
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "still running 5 s after the drain"
wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || fail "exit status $rc"
[ -z "$(get "$admin" /metrics)" ] || fail "the admin port outlived the process"
lines=$(wc -l <"$alog")
[ "$lines" -eq 2 ] || fail "access log: $lines line(s), want 2: $(cat "$alog")"
# ... with the request id ugate-serve sets by default, last.
rid='[0-9a-f]\{16\}-[0-9a-f]\{16\}'
grep -q '^127\.0\.0\.1 - - \[.*\] "GET / HTTP/1.1" 200 [0-9]* "-" "-" [0-9.]* '"$rid"'$' "$alog" ||
    fail "access log: no line for GET /: $(cat "$alog")"
# 1.5 s, within the loop clock's millisecond (the duration is truncated, not rounded)
grep -Eq '"GET /sleep\?ms=1500 HTTP/1.1" 200 .* 1\.(49[0-9]|[5-9][0-9][0-9]) [0-9a-f]{16}-[0-9a-f]{16}$' "$alog" ||
    fail "access log: no line for the slow request (1.5 s): $(cat "$alog")"
echo "check_admin ($backend): open, then draining with 1 in flight (in /debug/conns) while the public port refused; answered; exit 0; access log 2 lines"
