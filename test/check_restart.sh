#!/usr/bin/env bash
# ugate-serve restarts (loopback only; every wait bounded):
#   1. five in-place upgrades in a row under load: ugate-probe sends SIGUSR2 mid-load, each
#      successor takes the port over and is upgraded in turn, every old process drains and
#      exits 0; nothing refused, lost, truncated or hung, no connect over 0.5 s; then three
#      restarts on a socket the probe holds (socket activation): the same;
#   2. rollback: a successor that exits at once, and one that never reports ready, are
#      killed; the old process serves on, its pid file unchanged;
#   3. a SIGTERM during an upgrade kills the successor and stops the server; a second
#      SIGUSR2 during an upgrade is logged and ignored; the upgrade completes (the admin
#      socket handed over too) and
#      the pid file names the successor; SIGTERM then drains it and removes the pid file;
#   4. systemd socket activation (systemd-socket-activate) with NOTIFY_SOCKET: served on the
#      inherited socket, READY=1 once accepting, STOPPING=1 at SIGTERM (skipped without
#      systemd-socket-activate or python3).
# usage: check_restart.sh UGATE_SERVE UGATE_PROBE BACKEND PORT
set -u
serve=${1:?usage: check_restart.sh UGATE_SERVE UGATE_PROBE BACKEND PORT}
probe=${2:?} backend=${3:?} port=${4:?}
dir=$(mktemp -d)
trap 'pkill -KILL -f "$dir/" 2>/dev/null; rm -rf "$dir"' EXIT
mkdir "$dir/bin"
bin=$dir/bin/ugate-serve
cp "$serve" "$bin"
fail() {
    echo "check_restart ($backend): $*"
    [ -f "$dir/log" ] && tail -20 "$dir/log"
    exit 1
}
get() { # path -> the response, or nothing; at most 3 s
    timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port || exit 1
        printf 'GET $1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' >&3; cat <&3" 2>/dev/null
}
wait_for() { # command... : up to 5 s
    for _ in $(seq 100); do "$@" && return 0; sleep 0.05; done
    return 1
}
answers() { [[ $(get /) == *"Hello, World!"* ]]; }
pid_is() { [ "$(cat "$dir/pid" 2>/dev/null)" = "$1" ]; }

"$serve" --backend "$backend" --port "$port" --threads 1 --quiet >/dev/null 2>&1 &
spid=$!
if ! wait_for answers; then
    kill -KILL "$spid" 2>/dev/null
    [ "$backend" = uring ] && { echo "check_restart: SKIP: ugate-serve --backend uring did not start (io_uring refused?)"; exit 77; }
    fail "the server does not answer"
fi
kill -TERM "$spid"
wait "$spid"

# 1. five upgrades in a row under load, then three restarts on a held socket
out=$("$probe" --port "$port" --signal USR2 --successor-ms 300 --upgrades 5 --pid-file "$dir/ppid" \
    --quiet --server-log "$dir/probe.log" -- "$bin" --backend "$backend" --port "$port" \
    --threads 2 --pid-file "$dir/ppid") || fail "upgrades under load: $(tail -1 <<<"$out")"
total=$(tail -1 <<<"$out")
clean() { # a probe's totals line: nothing refused, reset, slow, killed; every exit 0
    [[ $1 == *" refused=0 connect_err=0 send_fail=0 "* && $1 == *" slow_connect=0 "* &&
        $1 == *" nonzero_exits=0 killed=0 "* ]]
}
clean "$total" || fail "upgrades under load: $total"
[ "$(grep -c "is accepting; handing over" "$dir/probe.log")" -eq 5 ] || fail "not 5 hand-overs"
free_port() { ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
wait_for free_port || fail "the port is still taken after the probe"
out=$("$probe" --port "$port" --signal TERM --successor-ms 300 --upgrades 3 --hold-socket \
    --quiet --server-log "$dir/probe.log" -- "$bin" --backend "$backend" --threads 2) ||
    fail "restarts on a held socket: $(tail -1 <<<"$out")"
held=$(tail -1 <<<"$out")
clean "$held" || fail "restarts on a held socket: $held"

# 2. rollback (once the probe's last instance, killed with its process group, is gone)
wait_for free_port || fail "the port is still taken after the probe"
"$bin" --backend "$backend" --port "$port" --threads 2 --pid-file "$dir/pid" \
    --admin "127.0.0.1:$((port + 10))" --upgrade-timeout-ms 2000 >>"$dir/log" 2>&1 &
old=$!
wait_for pid_is "$old" || fail "no pid file"
cp "$bin" "$dir/real"
printf '#!/bin/sh\nexit 3\n' >"$bin.new" && chmod +x "$bin.new" && mv "$bin.new" "$bin"
kill -USR2 "$old"
wait_for grep -q "upgrade failed: successor pid [0-9]* exited before it was ready" "$dir/log" ||
    fail "a successor that exits: no rollback"
answers || fail "not serving after the rollback"
printf '#!/bin/sh\nexec sleep 30\n' >"$bin.new" && chmod +x "$bin.new" && mv "$bin.new" "$bin"
kill -USR2 "$old"
wait_for grep -q "did not report ready in time" "$dir/log" || fail "a successor never ready: no rollback"
answers || fail "not serving after the second rollback"
pid_is "$old" || fail "the pid file changed in a rollback"
kill -0 "$old" || fail "the old process is gone"

# 3. a SIGTERM while an upgrade waits: the successor is killed, the server stops; then a
#    second SIGUSR2 while one waits, and the upgrade completes (the admin socket goes too)
printf '#!/bin/sh\nsleep 0.3\nexec "%s" "$@"\n' "$dir/real" >"$bin.new" && chmod +x "$bin.new" &&
    mv "$bin.new" "$bin"
kill -USR2 "$old"
sleep 0.1
kill -TERM "$old"
wait_for grep -q "was abandoned: a stop was asked for" "$dir/log" || fail "SIGTERM during an upgrade"
for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.05; done
kill -0 "$old" 2>/dev/null && fail "SIGTERM during an upgrade: still running"
wait "$old" || fail "SIGTERM during an upgrade: exit $?"
pgrep -f "$dir/real" >/dev/null && fail "SIGTERM during an upgrade: the successor survived"
answers && fail "SIGTERM during an upgrade: something still serves"
[ -e "$dir/pid" ] && fail "SIGTERM during an upgrade: the pid file stayed"
cp "$dir/real" "$bin" # the server runs as $bin: its successor is what $bin is then
"$bin" --backend "$backend" --port "$port" --threads 2 --pid-file "$dir/pid" \
    --admin "127.0.0.1:$((port + 10))" --upgrade-timeout-ms 3000 >>"$dir/log" 2>&1 &
old=$!
wait_for pid_is "$old" || fail "no pid file (second server)"
printf '#!/bin/sh\nsleep 0.3\nexec "%s" "$@"\n' "$dir/real" >"$bin.new" && chmod +x "$bin.new" &&
    mv "$bin.new" "$bin"
kill -USR2 "$old"
sleep 0.2
kill -USR2 "$old"
wait_for grep -q "one is already in progress; SIGUSR2 ignored" "$dir/log" || fail "second SIGUSR2 not ignored"
for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.05; done
kill -0 "$old" 2>/dev/null && fail "the old process did not hand over"
wait "$old" || fail "the old process exited $?"
new=$(cat "$dir/pid")
[ -n "$new" ] && [ "$new" != "$old" ] || fail "the pid file does not name the successor"
answers || fail "the successor does not answer"
[[ $(port=$((port + 10)) get /metrics) == *"ugate_loops 2"* ]] || fail "the successor's admin port"
kill -TERM "$new"
for _ in $(seq 100); do kill -0 "$new" 2>/dev/null || break; sleep 0.05; done
kill -0 "$new" 2>/dev/null && fail "the successor does not stop"
[ -e "$dir/pid" ] && fail "the pid file outlived the final exit"
cp "$dir/real" "$bin"

# 4. socket activation and sd_notify
if command -v systemd-socket-activate >/dev/null && command -v python3 >/dev/null; then
    python3 - "$dir/notify" >"$dir/notified" 2>&1 <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(10)
end = time.time() + 10
while time.time() < end:
    try:
        m = s.recv(4096).decode()
    except socket.timeout:
        break
    print(m.replace("\n", " | "), flush=True)
    if "STOPPING=1" in m:
        break
EOF
    listener=$!
    wait_for test -S "$dir/notify" || fail "notify socket not bound"
    NOTIFY_SOCKET=$dir/notify systemd-socket-activate -E NOTIFY_SOCKET -l "127.0.0.1:$port" \
        "$bin" --backend "$backend" --threads 2 --pid-file "$dir/pid" >>"$dir/log" 2>&1 &
    act=$!
    wait_for answers || fail "socket activation: no answer"
    grep -q "serving on inherited socket 3" "$dir/log" || fail "socket activation: not the inherited socket"
    wait_for grep -q "READY=1" "$dir/notified" || fail "socket activation: no READY=1"
    kill -TERM "$act"
    wait "$act" || fail "socket activation: exit $?"
    wait "$listener"
    grep -q "STOPPING=1" "$dir/notified" || fail "no STOPPING=1: $(cat "$dir/notified")"
    grep -q "gate closed by hand-off" "$dir/log" || fail "an activated socket was not handed off"
    activation="socket activation, READY=1 and STOPPING=1"
else
    activation="socket activation skipped (no systemd-socket-activate or python3)"
fi
echo "check_restart ($backend): 5 upgrades in a row under load ($total); 3 restarts on a held socket ($held); rollback twice; a SIGTERM during an upgrade undoes it and stops; second SIGUSR2 ignored; the admin socket handed over; $activation"
