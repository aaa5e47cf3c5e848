#!/usr/bin/env python3
"""Writes the hand-made seed corpus of fuzz_conn (fuzz/corpus/conn/): short scripts for the
simulated kernel (format in test/sim_backend.h), one scenario each."""
import os
import sys

W = [31, 25, 40, 30, 6, 3, 4, 3, 4, 30, 2, 4, 14, 2, 3, 30, 23, 2]  # sim_backend.c weights
NAMES = ["ACCEPT", "REQ", "DATA", "SEND", "EOF", "RESET", "ENOBUFS", "ACCEPT_ERR",
         "FAIL_SUBMIT", "KERNEL", "SHUTDOWN", "ALLOC", "POST", "PIPELINE", "RAW", "DATA2", "SEND2", "BACKLOG"]
OP = {n: sum(W[:i]) for i, n in enumerate(NAMES)}


def ev(name, *args):
    return bytes([OP[name], *args])


def step(*events, time=0):
    """One wait(): up to 4 events; time is the class of (s >> 2) & 15 (15: the core's timeout)."""
    assert 1 <= len(events) <= 4
    return bytes([(time << 2) | (len(events) - 1)]) + b"".join(events)


def quiet(time=15):
    return bytes([0xc3 | (time << 2) & 0x3c])


def header(h0=0, h1=0, h2=0, h3=0, seed=1):
    return bytes([h0, h1, h2, h3, 0, 0, 0, seed])


def req(c, r0, r1=0x40, r2=0):
    return ev("REQ", c, r0, r1, r2)


def data(c, n=3):
    return ev("DATA", c, n)


def send(c, m=0):
    return ev("SEND", c, m)


S = {}
# one keep-alive GET of each handler kind, answered and sent in full
for k in range(16):
    S[f"kind{k:02d}"] = header(seed=k + 1) + step(ev("ACCEPT", 1)) + step(req(0, k)) + \
        step(data(0)) + step(ev("KERNEL", 1), time=15) + step(send(0)) + step(send(0)) + \
        step(send(0), time=15) + step(send(0))
# HEAD, POST, HTTP/1.0, Connection: close
for i, fl in enumerate([0x10, 0x20, 0x40, 0x80, 0x60, 0xa0, 0xc0, 0xd0]):
    S[f"flags{i}"] = header() + step(ev("ACCEPT", 1)) + step(req(0, fl | 0, 0x93, 0x0f)) + \
        step(data(0)) + step(send(0)) + step(send(0))
# pipelining split into tiny reads, short sends
S["pipeline-split"] = header(h0=0x90) + step(ev("ACCEPT", 1)) + \
    step(req(0, 0), req(0, 3), req(0, 5), req(0, 0x20)) + \
    b"".join(step(data(0, 0x1c)) for _ in range(12)) + \
    b"".join(step(send(0, 4 + 8 * i)) for i in range(6)) + step(ev("POST", 0)) + step(send(0))
S["pipeline-burst"] = header() + step(ev("ACCEPT", 1)) + step(ev("PIPELINE", 0, 20)) + \
    step(data(0)) + step(data(0)) + quiet(14) + step(send(0))
# the pool runs dry, ENOBUFS, CQ overflow on recv and accept
S["tiny-pool"] = header(h0=0xf0) + step(ev("ACCEPT", 0)) + step(ev("ACCEPT", 1)) + \
    step(req(0, 0), req(1, 0x20)) + step(data(0, 0xff), data(1, 0xff)) + \
    step(ev("ENOBUFS", 0)) + step(data(1)) + step(send(0), send(1))
S["accept-errors"] = header() + step(ev("ACCEPT_ERR", 0)) + quiet(15) + step(ev("ACCEPT_ERR", 1)) + \
    quiet(15) + step(ev("ACCEPT", 0)) + step(req(0, 0)) + step(data(0))
# client EOF, reset, send errors while deferred
S["eof-deferred"] = header() + step(ev("ACCEPT", 1)) + step(req(0, 5)) + step(data(0)) + \
    step(ev("EOF", 0, 0)) + step(ev("KERNEL", 1))
S["reset-stream"] = header() + step(ev("ACCEPT", 1)) + step(req(0, 8, 0xf0)) + step(data(0)) + \
    quiet(12) + step(ev("RESET", 0))
S["send-epipe"] = header() + step(ev("ACCEPT", 1)) + step(req(0, 0, 0xe0)) + step(data(0)) + \
    step(send(0, 6))
# timeouts: idle, header (partial request), handler (forget-later), write
S["timeouts-short"] = header(h0=1) + step(ev("ACCEPT", 1)) + step(ev("ACCEPT", 1)) + \
    step(req(0, 10), req(1, 0)) + step(data(0), data(1, 0x04)) + quiet(15) + quiet(15) + \
    step(send(0)) + quiet(15)
S["timeouts-tiny"] = header(h0=2) + step(ev("ACCEPT", 1)) + step(req(0, 3)) + \
    step(data(0, 0x08)) + quiet(15) + step(data(0)) + quiet(15)
# shutdown: immediate, graceful with a delay, with a hold; requests in the lame duck
S["shutdown-immediate"] = header() + step(ev("ACCEPT", 1)) + step(req(0, 5)) + step(data(0)) + \
    step(ev("SHUTDOWN", 0)) + step(ev("KERNEL", 1))
S["shutdown-lameduck"] = header(h1=0x40) + step(ev("ACCEPT", 1)) + step(req(0, 3)) + \
    step(data(0)) + step(ev("SHUTDOWN", 0x09 | 0x10 | 0x60)) + step(ev("ACCEPT", 1)) + \
    step(req(1, 0)) + step(data(1)) + quiet(15) + step(send(0), send(1))
S["shutdown-deadline"] = header() + step(ev("ACCEPT", 1)) + step(req(0, 10)) + step(data(0)) + \
    step(ev("SHUTDOWN", 0x21)) + quiet(15) + quiet(15)
# max_conns 4 pauses the accept; max_inflight 2 sheds
S["max-conns"] = header(h0=0x0c) + b"".join(step(ev("ACCEPT", 1)) for _ in range(6)) + \
    step(ev("KERNEL", 1)) + step(ev("EOF", 0, 0)) + step(ev("KERNEL", 1)) + \
    step(req(1, 5), req(2, 5), req(3, 5)) + step(data(1), data(2), data(3))
# submission and allocation failures
S["fail-submit"] = header(h3=12) + step(ev("FAIL_SUBMIT", 2, 0)) + step(ev("ACCEPT", 1)) + \
    step(req(0, 0)) + step(data(0)) + step(ev("FAIL_SUBMIT", 1, 1), send(0)) + step(data(0))
S["fail-alloc"] = header(h2=12) + step(ev("ALLOC", 3)) + step(ev("ACCEPT", 1)) + \
    step(req(0, 7)) + step(data(0)) + step(ev("ALLOC", 1)) + step(send(0))
S["fail-create"] = header(h1=0x80, h2=5)
# limits, bad Host, raw bytes
S["limits"] = header(h1=1) + step(ev("ACCEPT", 1), ev("ACCEPT", 1), ev("ACCEPT", 1)) + \
    step(req(0, 15, 0, 0x00), req(1, 15, 0, 0x10), req(2, 15, 0, 0x20)) + \
    step(data(0), data(1), data(2)) + step(send(0), send(1), send(2))
S["raw"] = header() + step(ev("ACCEPT", 1)) + step(ev("RAW", 0, 20) + b"GET / HTTP/1.1\r\n\r\nxx") + \
    step(data(0)) + step(send(0))
S["expect-chunked"] = header() + step(ev("ACCEPT", 1)) + step(req(0, 0x20, 0x50, 0x0c)) + \
    step(data(0, 0x05)) + step(send(0)) + step(data(0)) + step(send(0))
S["sibling-answer"] = header() + step(ev("ACCEPT", 1), ev("ACCEPT", 1)) + \
    step(req(0, 5), req(1, 5)) + step(data(0), data(1)) + step(req(0, 0)) + \
    step(data(0), ev("RESET", 1), data(0)) + step(send(0))

# clients queued in the listener when the gate closes; a failing wait()
S["gate-queue"] = header() + step(ev("ACCEPT", 1)) + \
    step(ev("BACKLOG"), ev("BACKLOG"), ev("BACKLOG")) + step(req(0, 3), data(0)) + \
    step(ev("SHUTDOWN", 0x61)) + step(ev("KERNEL", 1)) + step(req(1, 0), data(1), send(1)) + quiet()
S["wait-fails"] = header(h3=8) + step(ev("ACCEPT", 1)) + step(req(0, 5), data(0)) + \
    step(ev("FAIL_SUBMIT", 6, 0)) + step(send(0))
S["enobufs-rearm"] = header(h3=8) + step(ev("ACCEPT", 1)) + step(req(0, 0, 0xf0)) + step(data(0)) + \
    step(ev("FAIL_SUBMIT", 1, 0), ev("ENOBUFS", 0)) + step(send(0)) + step(send(0))
S["pipeline-parked"] = header() + step(ev("ACCEPT", 1)) + step(ev("PIPELINE", 0, 0xff)) + \
    b"".join(step(data(0)) for _ in range(8)) + step(ev("POST", 0)) + step(send(0))

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "conn")
os.makedirs(out, exist_ok=True)
for name, blob in S.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(blob)
print(len(S), "scripts in", out)
