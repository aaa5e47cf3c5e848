/* A deterministic, single-threaded simulated kernel for the core, and a workload that checks
 * the server's behaviour on it (used by test_fault and fuzz/fuzz_conn).
 *
 * sim_run() creates a server on the simulated backend and runs ug_server_run() on the calling
 * thread. The "world" acts inside wait(): each call reads the next step of a script (fuzzer
 * input, or pseudo-random bytes from a seed) and turns it into completions: new connections,
 * client bytes split at arbitrary points, EOFs, resets, full/short/failed sends, ENOBUFS,
 * multishot operations ending while carrying a result (CQ overflow), accept errors, refused
 * submissions, cancels completing (or racing a normal completion), a virtual clock that jumps
 * to the earliest deadline when nothing else happens, shutdown requests and allocation
 * failures. When the script is exhausted the world asks for a graceful shutdown and behaves
 * well; a run that does not end within a bounded number of steps is a hang.
 *
 * Connection fds are real socketpair() ends placed at fd numbers never reused within a run, so
 * the core's close(2) and shutdown(2) are real and observable. The listener is a real loopback
 * socket (the core creates it).
 *
 * Checked, each a "violation": the backend contract (one recv and one send per connection, no
 * op on a closed fd or after the fd's close, no reserved user_data, provided buffers released
 * exactly once, send buffers unchanged in flight, a listener closed only after its accept's
 * final completion); the responses on every connection (well-formed HTTP/1.1, in request order,
 * matching what the handler was asked to send, none without a request, nothing after
 * Connection: close, none lost on a connection that ended normally); the handler side (every
 * request dispatched once, with the bytes the client sent; answered or cancelled exactly once);
 * streamed bodies (POST /ks/, UG_ROUTE_STREAM_BODY: every byte handed out once, in order, none
 * while paused, the trailers, 413 past the route's limit, 100 Continue only when read, close
 * after an answer before the body's end, the body or handler timeout as the state says); the
 * middlewares (run in order, once each; completion callbacks run once each, innermost first,
 * before the server's hooks; middleware_misuse counts only the misuse done on purpose);
 * after the run the stats add up, no fd or buffer is left, accepted_after_close is 0.
 */
#ifndef UG_SIM_BACKEND_H
#define UG_SIM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

/* Known core defects the checker can be told to tolerate while their fixes are pending. */
enum sim_waive {
    SIM_WAIVE_408_COMPLETE = 1u << 0,  /* 408 for a request whose head had fully arrived */
    SIM_WAIVE_OUTPUT_GROWTH = 1u << 1, /* no bound on output queued for a non-reading client */
    SIM_WAIVE_TIMER_ENOMEM = 1u << 2,  /* a loop timer that failed to start hangs the drain */
    SIM_WAIVE_REORDER = 1u << 3,       /* parked input overtaken by newer bytes */
    SIM_WAIVE_CANCEL_COUNT = 1u << 4,  /* requests_cancelled counts cancels without callback */
    SIM_WAIVE_HEAD_BODY = 1u << 5,     /* a HEAD refused before its head was parsed gets a body */
};

typedef struct sim_opts {
    unsigned waive;             /* enum sim_waive */
    int trace;                  /* print every event and backend call to stderr */
    int faults;                 /* -1: as the script's header says; 0: none; 1: at least some */
    unsigned max_conns;         /* connections the world opens at most (default 48) */
    unsigned wind_steps;        /* steps allowed after the script ends (default 4000) */
    unsigned min_shutdown_step; /* the script\'s shutdown events before this step are ignored */
} sim_opts;

typedef struct sim_result {
    unsigned violations;
    char first[512]; /* the first violation */
    int create_rc;   /* ug__server_create_ops's result */
    int run_rc;      /* ug_server_run's result */
    unsigned steps, conns, requests, dispatched, responses, cancels, alloc_failures,
        submit_failures;
    /* streamed bodies: requests dispatched, read to their end, pieces, pauses; middleware
     * deferrals, completion callbacks run */
    unsigned sbodies, sbody_ends, pieces, pauses, mw_defers, completions;
} sim_result;

void sim_opts_init(sim_opts *o);
/* Run one world. Returns the number of violations (also in res). */
unsigned sim_run(const uint8_t *script, size_t len, const sim_opts *opts, sim_result *res);
/* Fill out[0..len) with pseudo-random script bytes derived from seed. */
void sim_script_seed(uint64_t seed, uint8_t *out, size_t len);

/* ---- the script format (for hand-written regression scripts) ----
 * 8 header bytes (missing bytes read as 0):
 *   h0: [1:0] timeouts (0 long, 1 short, 2 tiny, 3 off), [2] max_conns 4, [3] max_inflight 2,
 *       [5:4] recv buffer size (4096, 512, 64, 16), [7:6] buffers (64, 16, 4, 2)
 *   h1: [0] small limits, [1] gate_settle 0, [2] no server name, [3] handler timeout off,
 *       [5:4] linger (1000, 50, 5000, 0), [6] a shutdown hook takes a hold, [7] fail an
 *       allocation of server creation (the h2-th)
 *   h2: allocation failure rate ([3:0], 0-7: none), h3: submission failure rate (same),
 *       h3 [4]: max_output_bytes 8 KiB, [5] global middleware a (defers 1 in 8 requests to
 *       a timer), [6] global middleware b (a response field, defers 1 in 8 to a post, a
 *       second ug_next now and then); with either, /ks/ has a route middleware too
 *   h4..h7: seed of the world's own PRNG
 * Then steps, one per wait(): a step byte s, then 1 + (s & 3) events (none if s >> 5 == 7);
 * (s >> 2) & 7 picks the time that passes first (0-3 none, 4: 1 ms, 5: < 100 ms, 6: < 3 s,
 * 7: exactly the core's wait timeout). An event is an opcode byte followed by its argument
 * bytes; opcode bytes map to events by weight (frequent events own more byte values):
 * sim_op_byte() gives a byte that names an event. */
enum sim_event {
    SIM_E_ACCEPT = 0,  /* a: final (no F_MORE) when a % 8 == 0 */
    SIM_E_REQ,         /* c, r0, r1, r2: queue a request on connection c (see sim_backend.c) */
    SIM_E_DATA,        /* c, n: deliver client bytes (a request is made up if none queued) */
    SIM_E_SEND,        /* c, m: complete the send (full, short, EPIPE, ECONNRESET) */
    SIM_E_EOF,         /* c, a: the client shuts down its side ([0]: dropping unsent bytes) */
    SIM_E_RESET,       /* c: the client resets */
    SIM_E_ENOBUFS,     /* c: the recv ends with -ENOBUFS */
    SIM_E_ACCEPT_ERR,  /* e: EMFILE, ENFILE, ENOMEM, ENOBUFS, ECONNABORTED */
    SIM_E_FAIL_SUBMIT, /* k, e: the next submission of kind k fails (-EBUSY / -ENOMEM); kind 6
                          with e & 0x1e == 0: the next wait() fails (-EIO) */
    SIM_E_KERNEL,      /* a: deliver the kernel's pending completions (cancels, EOFs, ...) */
    SIM_E_SHUTDOWN,    /* a: graceful (delay, timeout from a) or immediate */
    SIM_E_ALLOC,       /* a: fail the a-th next allocation */
    SIM_E_POST,        /* a: another thread posts the answer to a deferred request */
    SIM_E_PIPELINE,    /* c, n: the client pipelines 1 + (n % 64) * 4 requests with large
                          answers ([6]: behind a deferred one, [7]: POSTs with bodies) */
    SIM_E_RAW,         /* c, n, bytes: the client sends n raw bytes */
    SIM_E_DATA2,       /* c, n: like DATA (weights DATA up) */
    SIM_E_SEND2,       /* c, m: like SEND */
    SIM_E_BACKLOG,     /* a real client connects: it waits in the listener's queue */
    SIM_E_COUNT,
};

/* A byte that names event ev (enum sim_event) in a script. */
uint8_t sim_op_byte(int ev);

#endif
