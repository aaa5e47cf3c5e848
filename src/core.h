/* The core's internals, grouped by subsystem. Not installed.
 *
 * Two kinds of state, two owners:
 *   struct ug_server  shared by every loop: the configuration, routes, hooks, the listener,
 *                     the gate. Frozen once ug_server_run starts, except for the gate's and
 *                     the listener's atomics (written by loop 0, read by all).
 *   struct ug__loop   one per thread: its backend, connection slots, timeout queues, timers,
 *                     request recycler, clock, Date cache, posts, inbox, counters. Only its
 *                     own thread touches it, except the inbox and posts (filled by others)
 *                     and the counters and gauges (read by others, relaxed).
 * The hot path takes the loop. Loop 0 runs on the thread that calls ug_server_run; it owns
 * the listener, accepts every connection and hands each to the loop with the fewest, closes
 * the gate and coordinates the drain (gate.c).
 */
#ifndef UG_CORE_H
#define UG_CORE_H

#include "backend.h"
#include "fault.h"
#include "http.h"
#include "timer.h"
#include "ugate.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct ug__loop ug__loop;

/* ---------------------------------------------------------------- user_data ----
 * [63:60] op, [59:32] slot index (in the loop), [31:0] slot generation. The generation makes
 * a completion for a slot that was freed and reused impossible to dispatch to the new
 * occupant (nginx's "instance" bit, widened). Every loop has its own backend, so slot
 * indices are per loop. */
enum ug__op {
    UG_OP_ACCEPT = 1,
    UG_OP_RECV = 2,
    UG_OP_SEND = 3,
    UG_OP_DEADLINE = 4, /* the drain deadline: one backend timer per loop */
};
#define UG_UD(op, idx, gen)                                                                        \
    (((uint64_t)(op) << 60) | ((uint64_t)((idx)&0x0fffffffu) << 32) | (uint64_t)(uint32_t)(gen))
#define UG_UD_OP(ud) ((unsigned)((ud) >> 60))
#define UG_UD_IDX(ud) ((uint32_t)(((ud) >> 32) & 0x0fffffffu))
#define UG_UD_GEN(ud) ((uint32_t)(ud))
#define UG_IDX_MAX 0x0fffffffu
#define UG_NONE UINT32_MAX

/* Request ids: [63:32] sequence (per loop, never 0), [31:24] loop, [23:0] slot index: never
 * 0, unique server-wide until a loop has dispatched 2^32 - 1 more requests, and the loop
 * that owns a request can be read off its id. max_conns is bounded by the slot field. */
#define UG_ID_SLOT_MASK 0x00ffffffu
#define UG_ID_LOOP_SHIFT 24
#define UG_ID_SEQ_SHIFT 32
#define UG_ID_LOOP(id) ((uint32_t)(((id) >> UG_ID_LOOP_SHIFT) & (UG_MAX_LOOPS - 1)))
#define UG_ID_SLOT(id) ((uint32_t)((id)&UG_ID_SLOT_MASK))

/* ---------------------------------------------------------------- byte buffers ---- */
typedef struct ug__buf {
    char *p;
    uint32_t len, cap;
} ug__buf;
int ug__buf_reserve(ug__buf *b, size_t extra); /* 0 or -ENOMEM; may move p */
int ug__buf_append(ug__buf *b, const void *data, size_t len);
void ug__buf_free(ug__buf *b);
/* Append into room already reserved. */
static inline void ug__buf_put(ug__buf *b, const void *data, size_t len) {
    assert(b->cap - b->len >= len);
    memcpy(b->p + b->len, data, len);
    b->len += (uint32_t)len;
}

/* ---------------------------------------------------------------- response heads ---- */
#define UG__U64_DIGITS (sizeof("18446744073709551615") - 1)
#define UG__DATE_LEN (sizeof("Sun, 06 Nov 1994 08:49:37 GMT") - 1)
#define UG__DATE_LINE_LEN (sizeof("Date: \r\n") - 1 + UG__DATE_LEN)
#define UG__STD_HDRS_MAX (sizeof("Server: \r\n") - 1 + UG_SERVER_NAME_MAX + UG__DATE_LINE_LEN)
/* Room first reserved for a head beyond its variable parts (Server/Date, Content-Type, the
 * handler's headers): the fixed lines fit in it; a head that does not is measured and
 * written again (response.c), so this is a guess, never a bound. */
#define UG__HEAD_GUESS 128u
/* Headers the handler set itself, so the server does not write its own. */
enum ug__own_hdr {
    UG_OWN_SERVER = 1u << 0,
    UG_OWN_DATE = 1u << 1,
};

/* ---------------------------------------------------------------- connections ----
 * A slot is what an idle keep-alive connection costs: kept small. */
enum ug__conn_state {
    UG_CONN_FREE = 0,
    UG_CONN_OPEN,    /* reading / handling / writing */
    UG_CONN_LINGER,  /* our FIN is sent (or about to be); reading and discarding until EOF */
    UG_CONN_CLOSING, /* cancels submitted; waiting for the last completions to close(2) */
};

enum ug__conn_flag {
    UG_CF_RECV_ARMED = 1u << 0, /* a multishot recv is armed (its final completion not seen) */
    UG_CF_SEND_INFLIGHT = 1u << 1,
    UG_CF_CLOSE_AFTER = 1u << 2, /* close once the queued output is sent */
    UG_CF_RECV_PAUSED = 1u << 3, /* input or output over its bound; recv re-armed when drained */
    UG_CF_DRAIN = 1u << 4,       /* gate is closing: next response says Connection: close */
    UG_CF_DIRTY = 1u << 5,       /* on the loop's dirty list */
    UG_CF_ERROR = 1u << 6,       /* ended by an error: counted in conns_reset */
    UG_CF_PEER_EOF = 1u << 7,    /* the client closed its side: answer what is buffered */
    UG_CF_FAILED = 1u << 8,      /* out of memory or submission slots mid-parse: closed as an
                                    error once the parse loop has unwound (conn_failed) */
};

/* Timeout queues (tq.c): every connection in a queue has the same timeout, so appending at
 * the tail keeps the queue sorted by deadline: arm, re-arm and disarm are O(1), with no
 * syscall and no heap (haproxy/nginx style). The loop waits until the earliest head. */
enum ug__tq {
    UG_TQ_NONE = 0,
    UG_TQ_IDLE,    /* keep-alive, waiting for a request's first byte */
    UG_TQ_HEADER,  /* request line + headers in progress */
    UG_TQ_BODY,    /* body in progress */
    UG_TQ_WRITE,   /* output queued, send not progressing */
    UG_TQ_LINGER,  /* closing politely, or idle during a drain */
    UG_TQ_HANDLER, /* a deferred request waiting for its handler's answer */
    UG_TQ_COUNT,
};

/* What a connection is doing, as the metrics (ugate_connections{state}), the live dump and
 * the connection-state hook see it: set where the connection changes timeout queue (tq.c),
 * and where it starts reading, streams or closes (conn.c). */
enum ug__view {
    UG_VIEW_NONE = 0, /* a free slot */
    UG_VIEW_NEW,      /* accepted, no byte yet */
    UG_VIEW_READING,  /* a request's head or body arriving */
    UG_VIEW_HANDLER,  /* a request deferred by its handler, or streaming */
    UG_VIEW_WRITING,  /* a send in flight */
    UG_VIEW_IDLE,     /* keep-alive, between requests */
    UG_VIEW_LINGER,   /* closing politely: our FIN sent, reading until the client's; or idle
                         through a drain */
    UG_VIEW_CLOSING,  /* waiting for its last completions */
    UG_VIEW_COUNT,
};
#define UG__VIEW_NAMES                                                                             \
    { "", "new", "reading", "handler", "writing", "idle", "lingering", "closing" }

typedef struct ug__conn {
    int fd;
    uint32_t gen;
    uint8_t state; /* ug__conn_state */
    uint8_t tq;    /* ug__tq */
    uint8_t view;  /* ug__view */
    uint16_t flags;
    uint32_t tq_prev, tq_next; /* slot indices, UG_NONE at the ends */
    uint32_t dirty_next;       /* next on the dirty list */
    uint32_t requests;         /* dispatched on it */
    uint64_t deadline_ms;
    struct ug_request *ctx; /* NULL while idle: no buffer is held */
    /* For the live dump and the hooks: plain fields of the loop's, read on its thread. */
    uint64_t t_open_ms, t_active_ms; /* accepted; last byte received or sent */
    uint64_t bytes_in, bytes_out;
} ug__conn;

/* A generated request id: the server's random prefix and the request's ug_req_id, in hex. */
#define UG__RID_LEN (sizeof("0123456789abcdef-0123456789abcdef") - 1)

/* A buffered body is held whole in memory: the bound of ug_config.max_body_bytes and of a
 * buffered route's ug_route_body_limit. */
#define UG__BUFFERED_BODY_MAX (1ull << 30)

/* ---------------------------------------------------------------- chains ----
 * A middleware (chain.c): what ug_use and ug_route_use registered. */
typedef struct ug__mw {
    char name[UG_MIDDLEWARE_NAME_MAX + 1];
    ug_middleware_fn fn;
    void *user;
} ug__mw;
#define UG__CHAIN_NONE UINT32_MAX /* no element of the chain is running */

typedef struct ug__req_done {
    ug_completion_fn fn;
    void *user;
} ug__req_done;

/* Where a request's body is (body.c). Buffered bodies are parsed whole before dispatch. */
enum ug__body {
    UG_BODY_BUFFERED = 0,
    UG_BODY_WAITING, /* a streamed route's: dispatched at the head, ug_req_read_body not called */
    UG_BODY_READING, /* pieces handed to body_fn as they come */
    UG_BODY_DONE,    /* the last piece has been handed out */
    UG_BODY_FAILED,  /* refused mid-body (400, 408, 413): the rest is never read */
};

/* ---------------------------------------------------------------- requests ----
 * The active context of a busy connection; it is also the ug_request. */
enum ug__req_state {
    UG_RS_NONE = 0,  /* no request dispatched (reading, or between requests) */
    UG_RS_HANDLER,   /* inside the handler call */
    UG_RS_DEFERRED,  /* handler returned UG_LATER, no response yet */
    UG_RS_STREAMING, /* ug_resp_start called, not ended */
    UG_RS_ANSWERED,  /* response complete; request bytes not yet consumed */
};

struct ug_request {
    ug__loop *loop;
    ug__conn *conn;
    uint64_t id; /* see UG_ID_*; 0 while no request is dispatched */

    ug__buf in;      /* input; in.p[in_off] is the current request's first byte */
    uint32_t in_off; /* bytes of answered requests not yet compacted away */
    ug__buf parked;  /* input that arrived while a request is live (its views pin 'in') */
    ug__http_req http;
    ug__http_header *headers; /* max_headers entries, allocated with the context */
    uint8_t parsing;          /* http is initialised for the request at in.p[0] */
    uint8_t rstate;           /* ug__req_state */
    uint8_t keep_alive;       /* this request allows the connection to stay open */
    uint8_t continue_sent;
    uint8_t inflight;       /* counted in the loop's inflight */
    uint64_t t_dispatch_ms; /* loop clock when dispatched: its age in the forced-request log */
    uint64_t t_start_ns;    /* loop clock when the server started reading it (the histogram) */
    uint64_t resp_base;     /* the connection's bytes queued when its response began */
    uint8_t end_how;        /* ug_request_end of the core's own answers (shed, timed out) */
    ug_str request_id;      /* ug_config.request_ids: a view of the header, or of rid_buf */
    char rid_buf[UG__RID_LEN + 1];

    ug__buf out[2]; /* output; out[sending] is in flight, the other takes appends */
    int8_t sending; /* index in flight, or -1 */
    uint32_t sent;  /* bytes of out[sending] already sent */
    struct iovec iov;

    ug__buf resp_hdrs; /* headers added with ug_resp_header before the response starts */
    uint8_t own_hdrs;  /* ug__own_hdr */
    uint8_t head;
    uint8_t chunked_out; /* streaming with chunked framing */
    uint16_t status;

    /* The chain (chain.c): its route (NULL: the core's 404 or 405), the element holding the
     * request, the innermost one running (UG__CHAIN_NONE when none is). */
    const struct ug__route *route;
    uint8_t path_hit;
    uint32_t chain_at, chain_running;
    uint8_t ndone;
    ug__req_done done[UG_REQ_ON_COMPLETE_MAX];

    /* A streamed body (body.c): its bytes are parsed from 'parked', which holds nothing else
     * until its end; the head stays alone in 'in'. */
    uint8_t body;        /* ug__body */
    uint8_t body_paused; /* ug_req_body_pause */
    ug_body_fn body_fn;
    void *body_user;

    ug_cancel_fn cancel_fn;
    void *cancel_user;
    ug__timer timer;
    ug_req_timer_fn timer_fn;
    void *timer_user;

    struct ug_request *free_next;
};

static inline int ug__request_live(const struct ug_request *ctx) {
    return ctx && (ctx->rstate == UG_RS_HANDLER || ctx->rstate == UG_RS_DEFERRED ||
                   ctx->rstate == UG_RS_STREAMING);
}

/* ---------------------------------------------------------------- routes, hooks, posts ---- */
typedef struct ug__route {
    char *method; /* NULL: any */
    size_t method_len;
    char *path;
    size_t path_len;
    unsigned flags;
    ug_handler_fn fn;
    void *user;
    uint64_t max_body; /* 0: the server's */
    ug__mw *mw;        /* its own middlewares, after the global ones */
    uint32_t nmw;
} ug__route;

typedef struct ug__router {
    ug__route *v;
    size_t n;
} ug__router;

typedef struct ug__hook {
    ug_shutdown_hook_fn fn;
    void *user;
} ug__hook;

typedef struct ug__conn_hook {
    ug_conn_state_fn fn;
    void *user;
} ug__conn_hook;

typedef struct ug__done_hook {
    ug_completion_fn fn;
    void *user;
} ug__done_hook;

/* Holds with a label (ug_server_hold_label), under the mutex: what the dump lists and the
 * deadline logs. The count in ug__gate.holds includes them. */
typedef struct ug__hold_label {
    char name[UG_HOLD_LABEL_MAX + 1];
    uint32_t count;
} ug__hold_label;

typedef struct ug__post {
    struct ug__post *next;
    ug_post_fn fn;
    void *user;
} ug__post;

/* ---------------------------------------------------------------- the listener ----
 * One state, its transitions in listener.c. */
enum ug__listener_state {
    UG_LS_IDLE = 0,  /* open, nothing armed yet (before the run) */
    UG_LS_ACCEPTING, /* the accept is armed */
    UG_LS_RETRY,     /* the accept ended on a resource error; re-armed by a timer */
    UG_LS_PAUSING,   /* at max_conns: its cancel is submitted, the final completion not seen */
    UG_LS_PAUSED,    /* at max_conns: nothing armed, clients wait in the kernel's backlog */
    UG_LS_CLOSING,   /* the gate closed: the accept's cancel is submitted (or to be retried) */
    UG_LS_SETTLING,  /* new SYNs dropped; handshakes under way get gate_settle_ms */
    UG_LS_CLOSED,    /* closed: nothing more can be accepted */
};

typedef struct ug__listener {
    int fd;
    uint16_t port;
    uint8_t state;         /* ug__listener_state, loop 0's */
    uint8_t cancel_retry;  /* the accept's cancel could not be submitted: try again */
    uint8_t nodelay;       /* our own, with TCP_NODELAY set before listen(): accepted sockets
                              inherit it (an adopted one's connections get it one by one) */
    _Atomic int closed;    /* set once CLOSED: the other loops may end */
    _Atomic int paused;    /* at max_conns: loops that close connections wake loop 0 */
    uint32_t next_loop;    /* round-robin start for the hand-off */
    ug__timer retry_timer; /* reserved */
    ug__timer settle_timer;
    pthread_mutex_t fd_mu; /* the fd's close against ug_server_dup_listener */
} ug__listener;

/* ---------------------------------------------------------------- the gate ---- */
enum ug__shutdown_req {
    UG_SD_NONE = 0,
    UG_SD_GRACEFUL,
    UG_SD_IMMEDIATE,
};

enum ug__force {
    UG_FORCE_NONE = 0,
    UG_FORCE_DEADLINE,  /* the deadline passed: loops with something open force it */
    UG_FORCE_IMMEDIATE, /* an immediate stop (or a failed loop): every loop forces */
};

#define UG_HOLDS_DROPPED 0x80000000u /* the holds were dropped: no new one is taken */

typedef struct ug__gate {
    _Atomic int state;        /* ug_gate_state: written by loop 0 only */
    _Atomic int req;          /* ug__shutdown_req: the strongest asked for */
    _Atomic int opts_claimed; /* the first ug_server_shutdown stores the options... */
    _Atomic int opts_ready;   /* ...and then says so; loop 0 waits for it */
    _Atomic uint32_t delay_ms, timeout_ms;
    _Atomic int handoff;          /* the first shutdown's opts.handoff */
    _Atomic uint64_t deadline_ns; /* set before DRAINING is published */
    _Atomic int forcing;          /* ug__force: every loop forces its connections */
    _Atomic uint32_t holds;       /* ug_server_hold's count, | UG_HOLDS_DROPPED once dropped */
    int seen_req;                 /* loop 0: the request last acted on */
    ug__timer lame_duck_timer;    /* loop 0, reserved */
    uint64_t t_lame_duck_ms, t_close_ms;
    _Atomic uint64_t close_ns, end_ns; /* the close point, the drain's end: for the metrics */
    _Atomic uint64_t conns_at_close;
    pthread_mutex_t labels_mu; /* guards labels, and holds against the drop (drop_holds) */
    ug__hold_label labels[UG_HOLD_LABELS_MAX];
} ug__gate;

/* ---------------------------------------------------------------- counters ----
 * ug_stats is all uint64_t, and each loop has one: only its thread writes it (relaxed
 * stores of load + 1: no read-modify-write instruction), any thread sums them (relaxed
 * loads). */
_Static_assert(sizeof(ug_stats) % sizeof(uint64_t) == 0, "ug_stats holds only uint64_t fields");
#define UG_STAT_ADD(lp, field, n)                                                                  \
    __atomic_store_n(&(lp)->stats.field, (lp)->stats.field + (n), __ATOMIC_RELAXED)
#define UG_STAT_INC(lp, field) UG_STAT_ADD(lp, field, 1)
/* The same for any counter or gauge of the loop's that other threads read. */
#define UG_GAUGE_SET(lv, v) __atomic_store_n(&(lv), (v), __ATOMIC_RELAXED)
#define UG_GAUGE_ADD(lv, n) UG_GAUGE_SET(lv, (lv) + (n))
#define UG_GAUGE_GET(lv) __atomic_load_n(&(lv), __ATOMIC_RELAXED)

/* Responses by status code: one counter per code the server can send. */
#define UG__STATUS_MIN 100
#define UG__STATUS_MAX 599
/* ugate_request_duration_seconds: the upper bounds of its buckets, in nanoseconds (the
 * last, +Inf, is implied), so that an observation is integer compares (request.c) and the
 * exposition prints them exactly (metrics.c). Finer than Prometheus's defaults at the low
 * end: most requests here take microseconds. */
#define UG__DURATION_NBUCKETS 16
extern const uint64_t ug__duration_bounds_ns[UG__DURATION_NBUCKETS];

/* What a loop contributes to the report (summed when the run ends). */
typedef struct ug__loop_report {
    uint64_t conns_drained, conns_forced, requests_drained, requests_forced;
} ug__loop_report;

/* ---------------------------------------------------------------- inbox ----
 * Connections loop 0 hands to another loop: a single-producer single-consumer ring (loop 0
 * pushes, the owner pops; acquire/release, no read-modify-write). Full: loop 0 keeps the
 * connection itself. */
#define UG_INBOX_SIZE 1024u
typedef struct ug__inbox {
    _Atomic uint32_t head; /* next to pop (the owner's) */
    _Atomic uint32_t tail; /* next to push (loop 0's) */
    int fds[UG_INBOX_SIZE];
} ug__inbox;

/* ---------------------------------------------------------------- a loop ---- */
enum ug__loop_phase {
    UG_LOOP_RUNNING = 0,
    UG_LOOP_DRAINING, /* it has seen the gate close: its connections drain */
    UG_LOOP_FORCED,   /* it has forced its connections (deadline, immediate, failure) */
};

struct ug__loop {
    ug_server *srv;
    uint32_t index;
    const ug__backend_ops *be_ops;
    ug__backend *be;
    pthread_t thread;
    int thread_started;
    int rc; /* 0, or the backend's error that ended this loop */

    /* hot configuration, copied from the server */
    uint32_t max_output_bytes;
    uint32_t max_inflight; /* this loop's share; UG_UNLIMITED for none */
    const ug__http_limits *limits;

    /* connection slots: reserved address space, touched as used */
    ug__conn *slots;
    uint32_t nslots;     /* capacity (max_conns + headroom for accepts racing a pause) */
    uint32_t slots_used; /* high-water mark: slots [0, slots_used) have been touched */
    uint32_t free_head;  /* free list through tq_next */
    uint32_t conns_open; /* written by this loop only (relaxed atomic stores) */
    uint32_t inflight;   /* requests dispatched and not answered */
    uint32_t dirty_head;

    /* request contexts: a recycler of fixed-size objects */
    struct ug_request *ctx_free;
    uint32_t ctx_free_count;
    uint32_t req_seq; /* the last request id's sequence (ids: see UG_ID_SLOT_MASK) */

    /* time */
    uint64_t now_ms, now_ns;
    int time_stale;   /* set before a wait; the first completion after it reads the clock */
    uint32_t wait_io; /* receives with data and sends of the last wait: its batch (wait_batch) */
    int64_t date_sec;
    char std_hdrs[UG__STD_HDRS_MAX]; /* the Server line, then the Date line (once a second) */
    uint32_t server_line_len;
    uint32_t std_hdrs_len;

    /* timeout queues and timers */
    struct {
        uint32_t head, tail;
        uint32_t timeout_ms;
    } tq[UG_TQ_COUNT];
    ug__timer_heap timers;
    ug__timer deadline_fallback; /* reserved: the drain deadline if the backend refused it */

    uint8_t phase;        /* ug__loop_phase */
    uint8_t forced;       /* it forced connections (or holds): the run returns 1 */
    _Atomic int ended;    /* its run returned or failed: loop 0 hands it nothing more */
    _Atomic int started;  /* its run has begun: it takes posts (ug_server_debug_json) */
    uint8_t wake_pending; /* loop 0: this loop has connections in its inbox to wake it for */
    ug__inbox inbox;
    _Atomic(ug__post *) posts;

    ug__loop_report report; /* relaxed stores: read by the metrics */
    ug_stats stats;
    /* more counters and gauges for the metrics (relaxed stores, read by any thread) */
    uint32_t views[UG_VIEW_COUNT];      /* connections by ug__view */
    uint64_t t_oldest_deferred_ms;      /* dispatch time of the oldest deferred request, 0 */
    uint64_t codes[UG__STATUS_MAX + 1]; /* responses by status code */
    uint64_t duration_counts[UG__DURATION_NBUCKETS + 1]; /* per bucket, not cumulative */
    uint64_t duration_sum_ns;
};

/* ---------------------------------------------------------------- the server ---- */
struct ug_server {
    ug_config cfg;
    char *host_copy, *server_name_copy;
    ug__http_limits limits;
    uint64_t rid_prefix; /* random, per server: generated request ids are unique in a process */
    const ug__backend_ops *be_ops;
    ug__router router;
    ug__hook *hooks;
    size_t nhooks;
    ug__conn_hook *conn_hooks;
    size_t nconn_hooks;
    ug__done_hook *done_hooks;
    size_t ndone_hooks;
    ug__mw *mw; /* global middlewares (ug_use) */
    uint32_t nmw;
    int running;

    ug__listener listener;
    ug__gate gate;
    ug_report report; /* loop 0's part: the gate's figures */

    uint32_t nloops;
    ug__loop *loops[UG_MAX_LOOPS];
};

/* ---------------------------------------------------------------- by file ---- */

/* metrics.c: text into a caller's buffer, NUL-terminated; overflow is sticky (nothing more
 * is written once a piece did not fit). */
typedef struct ug__text {
    char *p;
    size_t cap, len;
    int overflow;
} ug__text;
void ug__text_put(ug__text *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* config.c: the defaults, resolved and checked; -EINVAL if cfg is not acceptable. The slots
 * each loop reserves. */
int ug__config_resolve(const ug_config *in, ug_config *out);
uint32_t ug__config_slots(const ug_config *cfg);

/* server.c */
int ug__server_create_ops(ug_server **out, const ug_config *cfg, const ug__backend_ops *ops);
/* Remove the connection-state and completion hooks registered with user (not while the
 * server runs). */
void ug__server_unhook(ug_server *srv, const void *user);
void ug__log(const ug_server *srv, ug_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* loop.c */
int ug__loop_create(ug_server *srv, uint32_t index, const ug__backend_ops *ops, ug__loop **out);
void ug__loop_destroy(ug__loop *lp);
uint32_t ug__loop_close_inbox(ug__loop *lp); /* after the run: the connections never taken */
int ug__loop_run(ug__loop *lp); /* until the loop has drained; 0 or the backend's -errno */
extern _Thread_local const ug_server *ug__loop_thread_server; /* the server whose loop runs here */
void ug__loop_wake(ug__loop *lp);                             /* any thread, async-signal-safe */
void ug__mark_dirty(ug__loop *lp, ug__conn *c);
/* Hand fd to lp (from loop 0): 0, or -EAGAIN when its inbox is full. */
int ug__loop_hand(ug__loop *lp, int fd);
int ug__loop_post(ug__loop *lp, ug_post_fn fn, void *user);
static inline uint32_t ug__loop_conns(const ug__loop *lp) { /* any thread */
    return __atomic_load_n(&lp->conns_open, __ATOMIC_RELAXED);
}
/* A loop's connections, counting those handed to it and not taken yet. Never too few on
 * loop 0 (which alone writes tail): head is read first, with acquire, because the taking
 * loop counts a connection in conns_open before it releases head (take_inbox); it may be too
 * many (a hand-off being taken, closes not yet visible), which only pauses early. From
 * another thread, an estimate (tail read after head keeps the difference from wrapping). */
static inline uint64_t ug__loop_load(const ug__loop *lp) {
    uint32_t head = atomic_load_explicit(&lp->inbox.head, memory_order_acquire);
    uint64_t conns = ug__loop_conns(lp);
    uint32_t tail = atomic_load_explicit(&lp->inbox.tail, memory_order_relaxed);
    return conns + (tail - head);
}
/* The server's connections, on every loop or on their way to one (see ug__loop_load). */
static inline uint64_t ug__server_load(const ug_server *srv) {
    uint64_t n = 0;
    for (uint32_t i = 0; i < srv->nloops; i++) n += ug__loop_load(srv->loops[i]);
    return n;
}

/* tq.c: put c in queue q with a deadline of now + q's timeout (a no-op if already in q);
 * restart c's deadline in its queue (the body timeout measures gaps); expire what is due;
 * the earliest deadline (UINT64_MAX if none). */
void ug__tq_set(ug__loop *lp, ug__conn *c, enum ug__tq q);
void ug__tq_touch(ug__loop *lp, ug__conn *c);
void ug__tq_expire(ug__loop *lp);
uint64_t ug__tq_next(const ug__loop *lp);

/* listener.c (loop 0) */
int ug__listener_open(ug_server *srv);
int ug__listener_start(ug__loop *lp0); /* arm the accept: 0 or -errno */
void ug__listener_on_accept(ug__loop *lp0, const ug__completion *cq);
void ug__listener_check_limit(ug__loop *lp0); /* pause at max_conns, resume below */
void ug__listener_gate_closed(ug__loop *lp0); /* stop accepting; drain the queue; close */
void ug__listener_turn(ug__loop *lp0);        /* each loop turn: retry a cancel, wake loops */
void ug__listener_fail(ug__loop *lp0);        /* the loop failed: close at once */
void ug__listener_close_fd(ug_server *srv);   /* ug_server_free */

/* gate.c */
int ug__gate_init(ug_server *srv);     /* after the loops exist: reserves loop 0's gate timer */
void ug__gate_turn(ug__loop *lp);      /* each loop turn: act on the gate's changes */
int ug__gate_done(const ug__loop *lp); /* 1 once lp has nothing left to serve */
void ug__gate_on_deadline(ug__loop *lp, const ug__completion *cq); /* cq NULL: the fallback */
void ug__gate_force_loop(ug__loop *lp, ug_cancel_reason why);      /* end lp's connections */
void ug__gate_loop_failed(ug__loop *lp); /* its backend failed: stop the whole server */
void ug__gate_wake_all(ug_server *srv);
static inline int ug__gate_state(const ug_server *srv) {
    return atomic_load_explicit(&srv->gate.state, memory_order_relaxed);
}
static inline int ug__gate_forcing(const ug_server *srv) {
    return atomic_load_explicit(&srv->gate.forcing, memory_order_relaxed);
}

/* conn.c */
static inline uint32_t ug__conn_idx(const ug__loop *lp, const ug__conn *c) {
    return (uint32_t)(c - lp->slots);
}
static inline uint64_t ug__conn_ud(const ug__loop *lp, const ug__conn *c, enum ug__op op) {
    return UG_UD(op, ug__conn_idx(lp, c), c->gen);
}
void ug__conn_accepted(ug__loop *lp, int fd);
void ug__conn_on_recv(ug__loop *lp, ug__conn *c, const ug__completion *cq);
void ug__conn_on_send(ug__loop *lp, ug__conn *c, const ug__completion *cq);
void ug__conn_flush(ug__loop *lp, ug__conn *c); /* parse pending input, send output */
void ug__conn_timeout(ug__loop *lp, ug__conn *c, enum ug__tq q);
void ug__conn_close(ug__loop *lp, ug__conn *c, int error);
void ug__conn_abort(ug__loop *lp, ug__conn *c, ug_cancel_reason why);
void ug__conn_drain(ug__loop *lp, ug__conn *c);                 /* gate closed: finish and close */
void ug__conn_free_all(ug__loop *lp, ug_cancel_reason why);     /* ug_server_free */
void ug__conn_view(ug__loop *lp, ug__conn *c, enum ug__view v); /* the gauges and the hook */
static inline uint64_t ug__conn_id(const ug__loop *lp, const ug__conn *c) {
    return ((uint64_t)c->gen << 32) | ((uint64_t)lp->index << UG_ID_LOOP_SHIFT) |
           ug__conn_idx(lp, c);
}

/* request.c */
struct ug_request *ug__ctx_get(ug__loop *lp);
void ug__ctx_put(ug__loop *lp, struct ug_request *ctx);
void ug__ctx_destroy(struct ug_request *ctx); /* free a context and its buffers */
void ug__ctx_free_all(ug__loop *lp);
void ug__request_dispatch(ug__loop *lp, ug__conn *c, struct ug_request *ctx);
void ug__request_finish(ug__loop *lp, struct ug_request *ctx); /* answered: consume it */
void ug__request_cancel(ug__loop *lp, struct ug_request *ctx, ug_cancel_reason why);
void ug__request_answered(struct ug_request *req);
void ug__request_timed_out(ug__loop *lp, struct ug_request *ctx); /* handler timeout: 503 */
/* Answer a live request for its handler (status), then fire its cancel callback (why). */
void ug__request_refuse(ug__loop *lp, struct ug_request *ctx, int status, ug_cancel_reason why,
                        ug_request_end how);
void ug__request_id_header(struct ug_request *ctx); /* X-Request-Id on the response, if any */
/* A streamed body's request is over before its body: nothing more of the connection's input
 * is read, and it closes after what is queued. */
void ug__request_discard_stream(struct ug_request *ctx);
/* The request ended (how): the duration histogram, then the completion hooks. */
void ug__request_done(ug__loop *lp, struct ug_request *ctx, ug_request_end how,
                      ug_cancel_reason why);

/* chain.c: run the request's chain from its first element (dispatch); a misuse, counted
 * and logged with the name of the element at fault (pos, or the one running). */
void ug__chain_start(ug__loop *lp, struct ug_request *ctx);
void ug__chain_misuse(struct ug_request *ctx, uint32_t pos, const char *what);
void ug__chain_free(ug_server *srv);

/* body.c: hand a streamed body's pieces out while the request reads it (process); move the
 * bytes after its head to its own buffer once it is dispatched at its head; refuse it
 * mid-body (status 400, 408 or 413, why for the cancel callback). */
void ug__body_pump(ug__loop *lp, ug__conn *c);
int ug__body_begin(ug__loop *lp, struct ug_request *ctx);
void ug__body_refuse(ug__loop *lp, struct ug_request *ctx, int status, ug_cancel_reason why);
/* The client's EOF came while a streamed body's request is live (process, after the pump). */
void ug__body_peer_eof(ug__loop *lp, ug__conn *c);
/* Whether the request's streamed body is still coming (a response now closes after it). */
static inline int ug__body_open(const struct ug_request *ctx) {
    if (ctx->body == UG_BODY_FAILED) return 1;
    return (ctx->body == UG_BODY_WAITING || ctx->body == UG_BODY_READING) &&
           (ctx->http.flags & UG_HTTP_HAS_BODY);
}

/* router.c */
int ug__router_add(ug__router *rt, const char *method, const char *path, unsigned flags,
                   ug_handler_fn fn, void *user);
/* The route registered with exactly this method and path, NULL if none. */
ug__route *ug__router_get(ug__router *rt, const char *method, const char *path);
/* The route for method and path; NULL, with *path_hit set if only the method differs. */
const ug__route *ug__router_find(const ug__router *rt, ug_str method, ug_str path, int *path_hit);
void ug__router_free(ug__router *rt);

/* response.c */
void ug__std_hdrs_init(ug__loop *lp);
void ug__date_refresh(ug__loop *lp, int64_t sec);
struct tm;
void ug__gmtime(int64_t sec, struct tm *tm); /* UTC fields, no lock (gmtime_r takes one) */
int ug__resp_error(struct ug_request *req, int status); /* a canned response, then close */
int ug__resp_continue(struct ug_request *req);

/* sock.c: listener set-up and socket options (the connection I/O goes through the backend) */
int ug__listen(const char *host, uint16_t port, int backlog, uint16_t *bound_port);
int ug__sock_set_nodelay(int fd);
int ug__sock_accept_nb(int lfd);      /* accept4 non-blocking: fd, -EAGAIN, or -errno */
int ug__sock_drop_syn(int lfd);       /* attach the SYN-dropping filter used while closing */
int ug__sock_detach_filter(int lfd);  /* 0 also when there was none */
int ug__sock_check_listening(int fd); /* a listening stream socket: 0, else -EINVAL/-errno */
int ug__sock_port(int fd, uint16_t *port);
struct sockaddr_storage;
int ug__sock_peer(int fd, struct sockaddr_storage *ss, uint32_t *len); /* getpeername */

#endif
