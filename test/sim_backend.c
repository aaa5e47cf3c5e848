/* The simulated kernel and the checking workload: see sim_backend.h. Single-threaded: every
 * backend call and every callback runs on the thread that called sim_run(). */
#include "sim_backend.h"

#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAXC 200     /* connection records per run */
#define MAXR 8192    /* request records per run */
#define MAXB 2048    /* completions per batch */
#define MAXBUF 64    /* provided buffers */
#define MAXT 8       /* backend timers */
#define FD_BASE 1000 /* connection i is fd FD_BASE + i: never reused within a run */
#define RESP_MAX 70000
#define MAXOC (3 * MAXR) /* completion callbacks registered per run */
#define OCSEQ 16384      /* their requests, by the id's sequence (a power of 2) */

/* ---------------------------------------------------------------- small buffers ---- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t n) {
    if (b->len + n <= b->cap) return;
    size_t c = b->cap ? b->cap : 256;
    while (c < b->len + n) c *= 2;
    char *p = realloc(b->p, c);
    if (!p) abort();
    b->p = p;
    b->cap = c;
}

static void sb_add(sbuf *b, const void *d, size_t n) {
    sb_reserve(b, n + 1);
    if (n) memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) {
    sb_add(b, s, strlen(s));
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof tmp) n = sizeof tmp - 1;
    sb_add(b, tmp, (size_t)n);
}

static void sb_free(sbuf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------------------- records ---- */

enum kind {
    K_IMM,          /* answers in the handler */
    K_TIMER,        /* defers, answers from ug_req_timer */
    K_POST,         /* defers; the world posts the answer later (another thread) */
    K_POST_SELF,    /* defers and posts its own answer to the next iteration */
    K_STREAM,       /* ug_resp_start / write / end in the handler */
    K_STREAM_LATER, /* starts, then writes and ends from timers */
    K_FORGET_DONE,  /* returns UG_DONE without answering: the server answers 500 */
    K_FORGET_LATER, /* defers and never answers: handler timeout or the client leaving */
    K_TWICE,        /* answers, then tries again (must be refused) */
    K_NOTFOUND,     /* no route: 404 */
    K_METHOD,       /* a POST-only route with another method: 405 */
    K_BADHOST,      /* two Host fields: 400 */
    K_LIMIT,        /* over a limit: 413 / 414 / 431 */
    K_RAW,          /* raw bytes from the script: anything may follow */
    K_SBODY,        /* POST /ks/: a streamed body (UG_ROUTE_STREAM_BODY), read in pieces */
};

static const char *const kind_name[] = {"imm",    "timer",        "post",        "post-self",
                                        "stream", "stream-later", "forget-done", "forget-later",
                                        "twice",  "notfound",     "method",      "badhost",
                                        "limit",  "raw",          "sbody"};

#define E400 1u
#define E413 2u
#define E414 4u
#define E431 8u

typedef struct sim_req {
    uint32_t id; /* X-Id: the index in S.reqs */
    int conn;
    int prev;                    /* previous request on the connection, -1 */
    size_t start, head_end, end; /* offsets in the connection's client stream */
    uint8_t kind, head, post, minor, want_close, expect, chunked, nhdrs, ctype, get_route;
    uint16_t status;
    uint16_t errs; /* E4xx: the refusal expected */
    uint32_t resp_len, body_len, delay_ms;
    /* handler side */
    uint8_t dispatched, answered, cancelled, gave_up, timed_out, has_cb, xreq_missing,
        answer_failed, post_pending, truncated_ok, cancel_reason, responded;
    uint64_t ug_id;
    uint32_t stream_off;
    /* K_SBODY: how its handler reads (enum sb_mode), what it has seen so far */
    uint8_t sb_streaming, sb_cont; /* SB_STREAM: its answer started; a 100 Continue is due */
    uint8_t sb_mode, sb_pauses, sb_trailers, sb_reading, sb_read_ok, sb_paused, sb_end, sb_body_to,
        sb_open_answer, sb_end_answer, sb_xbody_ok;
    uint32_t sb_got, sb_hash, sb_run_hash, sb_delay;
    unsigned sb_step; /* the world's step when reading began or last resumed */
    /* the middlewares: the last one that ran (1 a, 2 b, 3 the route's), whether one holds
     * the request (deferred: 1 a, 2 b), it was cancelled or timed out there */
    uint8_t mw_stage, mw_held, mw_cancelled, mw_timed_out, mw_hdr;
    ug_chain_pos mw_pos;
} sim_req;

typedef struct send_rec {
    size_t wire_start; /* where this send's bytes start on the wire */
    size_t dseen;      /* client bytes the core had seen when it was submitted */
} send_rec;

typedef struct sim_conn {
    int used, fd, peer;
    int backlog;      /* a real client in the listener's queue: fd is the core's once taken */
    int before_close; /* ... connected before the gate closed: it must be taken, not reset */
    uint16_t lport;   /* its local port (network order) */
    ino_t ino;
    int bound;
    uint32_t sidx, sgen;
    /* the kernel's view */
    int recv_armed, recv_fin, recv_cancelled;
    int32_t last_final; /* the result of the last recv's final completion */
    uint64_t recv_ud;
    int send_armed, send_fin, send_cancelled, send_epipe;
    uint64_t send_ud;
    char *send_copy;
    size_t send_len;
    struct iovec send_iov[8];
    unsigned send_iovcnt;
    int closed;        /* the core closed its fd */
    int fin;           /* the core shut its write side (or closed) */
    size_t fin_at;     /* client bytes delivered when that was seen */
    int shut_rd;       /* the core shut its read side */
    int eof, reset;    /* the client's side */
    int lossy;         /* something allowed responses to be lost or cut */
    size_t live_in;    /* bytes read into a live request's parked input */
    uint32_t live_req; /* ... that request's id + 1 (each live one has its own bound) */
    int live_reported;
    unsigned idle; /* wind-down steps with nothing to do */
    /* the client's stream */
    sbuf out;
    size_t delivered, dseen;
    int *rq;
    unsigned nrq, caprq;
    int raw; /* a raw record was sent: only well-formedness is checked after it */
    /* what the core sent */
    sbuf wire;
    send_rec *sends;
    unsigned nsends, capsends;
} sim_conn;

enum bkind { BK_ACCEPT = 1, BK_RECV, BK_SEND, BK_TIMER };

typedef struct bent {
    ug__completion c;
    int kind, idx; /* connection or timer index */
} bent;

enum skind { SK_ACCEPT, SK_RECV, SK_SEND, SK_CANCEL, SK_TIMER, SK_TIMER_CANCEL, SK_WAIT, SK_COUNT };

struct ug__backend {
    int dummy;
};

static struct sim {
    sim_opts o;
    sim_result *res;
    const uint8_t *sc;
    size_t sc_len, sc_pos;
    uint64_t rng;
    uint64_t now_ns;
    ug_server *srv;
    ug_config cfg;
    ug_report report;
    unsigned steps;
    int in_run, after_run, clean, freeing;

    /* backend */
    ug__backend be;
    uint32_t nbufs, bufsize;
    struct {
        char *p;
        int out;
    } bufs[MAXBUF];
    int acc_armed, acc_fin, acc_cancelled;
    uint64_t acc_ud;
    int lfd, listener_closed;
    struct {
        int armed, fin, cancelled;
        uint64_t ud, deadline;
    } timers[MAXT];
    int woken, quiet_step;
    bent batch[MAXB];
    unsigned nbatch;
    int64_t last_timeout;

    /* faults */
    int faults_now;
    unsigned alloc_rate, submit_rate; /* per 65536 */
    unsigned alloc_countdown;
    int fail_next[SK_COUNT];
    size_t max_alloc;
    int growth_reported;
    size_t max_send, max_alloc_ok; /* what max_output_bytes allows, with a response's slack */
    int timer_growth_failed;       /* an allocation failed that may have been the timer heap's */

    /* the world */
    sim_conn conns[MAXC];
    unsigned nconns, nbacklog;
    sim_req reqs[MAXR];
    unsigned nreqs;
    int wind;
    unsigned wind_steps;
    uint64_t wind_t0;
    int shutdown_asked, forced_seen;
    int hang, hang_waived, wait_failed;
    unsigned hang_steps;
    int hook_hold;
    unsigned holds_taken, holds_released, holds_posted;
    unsigned cancels_seen, timeout_cancels;
    unsigned wire_counted; /* final responses on the wire with a status ug_stats counts */
    char resp[RESP_MAX];

    /* what the completion and connection-state hooks said */
    unsigned ndone;
    uint64_t done_ids[MAXR];
    unsigned ndone_ids;
    struct {
        uint64_t id;
        ug_conn_state last;
    } cstates[2 * MAXC];
    unsigned ncstates;

    /* streamed bodies and middlewares */
    uint32_t sb_limit;        /* /ks/'s ug_route_body_limit */
    int sb_in_call;           /* inside ug_req_read_body or _resume: no piece may come */
    unsigned body_timeouts;   /* cancels for the body timeout (408), not the handler's */
    unsigned mw_on;           /* [0] middleware a, [1] b (and /ks/'s route middleware) */
    uint32_t mw_salt;         /* which requests they defer */
    uint64_t misuse_expected; /* middleware_misuse the workload caused on purpose */
    /* every ug_req_on_complete registered: runs exactly once, innermost first, before the
     * server's hooks */
    struct {
        uint64_t id;
        int32_t req; /* index in reqs, -1 if not one of ours */
        uint8_t order, ran;
    } oc[MAXOC];
    unsigned noc;
    struct {
        uint64_t id;
        uint16_t reg, ran;
    } ocseq[OCSEQ]; /* by the request id's sequence: registered and run so far */
    uint64_t oc_cur;
    uint8_t oc_cur_order;
} S;

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...) {
    if (!S.o.trace) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sim[%u %llums] ", S.steps, (unsigned long long)(S.now_ns / 1000000u));
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...) {
    char m[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    S.res->violations++;
    if (S.res->violations == 1)
        snprintf(S.res->first, sizeof S.res->first, "step %u: %s", S.steps, m);
    if (S.o.trace) fprintf(stderr, "sim[%u] VIOLATION: %s\n", S.steps, m);
}

static uint64_t rng(void) {
    uint64_t z = (S.rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned rnd(unsigned n) {
    return n ? (unsigned)(rng() % n) : 0;
}

static int sc_left(void) {
    return S.sc_pos < S.sc_len;
}

static uint8_t sc_u8(void) {
    return S.sc_pos < S.sc_len ? S.sc[S.sc_pos++] : 0;
}

void sim_script_seed(uint64_t seed, uint8_t *out, size_t len) {
    uint64_t save = S.rng;
    S.rng = seed * 0x2545f4914f6cdd1dull + 1;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = rng();
        for (size_t k = 0; k < 8 && i + k < len; k++) out[i + k] = (uint8_t)(v >> (8 * k));
    }
    S.rng = save;
}

void sim_opts_init(sim_opts *o) {
    memset(o, 0, sizeof *o);
    o->faults = -1;
    o->max_conns = 48;
    o->wind_steps = 4000;
}

static int idx_of(const sim_conn *c) {
    return (int)(c - S.conns);
}

static int terminal(const sim_req *r) {
    return r->answered || r->cancelled || r->gave_up;
}

static void mark_all_lossy(void) {
    for (unsigned i = 0; i < S.nconns; i++)
        if (!S.conns[i].closed) S.conns[i].lossy = 1;
}

/* ---------------------------------------------------------------- hooks ---- */

static uint64_t sim_clock(void) {
    return S.now_ns;
}

static int sim_alloc(size_t n) {
    if (n > S.max_alloc) S.max_alloc = n;
    if (S.max_alloc_ok && n > S.max_alloc_ok && !S.growth_reported &&
        !(S.o.waive & SIM_WAIVE_OUTPUT_GROWTH)) {
        S.growth_reported = 1;
        violation("the library allocates %zu bytes at once: output (or input) without bound", n);
    }
    if (!S.faults_now) return 0;
    int fail = 0;
    if (S.alloc_countdown && --S.alloc_countdown == 0)
        fail = 1;
    else if (S.alloc_rate && (rng() & 0xffff) < S.alloc_rate)
        fail = 1;
    if (fail) {
        S.res->alloc_failures++;
        if (S.srv && S.srv->loops[0]->timers.n == S.srv->loops[0]->timers.cap)
            S.timer_growth_failed = 1;
        mark_all_lossy();
        trace("alloc of %zu bytes fails", n);
    }
    return fail;
}

static int submit_fault(int kind) {
    if (!S.faults_now) return 0;
    int e = S.fail_next[kind];
    if (e)
        S.fail_next[kind] = 0;
    else if (S.submit_rate && (rng() & 0xffff) < S.submit_rate)
        e = (rng() & 1) ? -EBUSY : -ENOMEM;
    if (e) {
        S.res->submit_failures++;
        trace("submission of kind %d refused: %d", kind, e);
    }
    return e;
}

/* ---------------------------------------------------------------- the backend ---- */

static int fd_open(int fd) {
    return fcntl(fd, F_GETFD) >= 0;
}

static int ops_outstanding(const sim_conn *c) {
    return c->recv_armed || c->recv_fin || c->send_armed || c->send_fin;
}

static ino_t ino_of(int fd) {
    struct stat st;
    return fstat(fd, &st) < 0 ? 0 : st.st_ino;
}

static void check_closed(sim_conn *c) {
    if (c->closed || c->fd < 0) return;
    if (c->backlog ? ino_of(c->fd) == c->ino : fd_open(c->fd)) return; /* the core's numbers */
    c->closed = 1;
    trace("conn %d: the core closed fd %d", idx_of(c), c->fd);
    if (ops_outstanding(c))
        violation("conn %d: fd %d closed with an operation outstanding (recv %d/%d, send %d/%d)",
                  idx_of(c), c->fd, c->recv_armed, c->recv_fin, c->send_armed, c->send_fin);
}

/* A connection the core took from the listener's queue itself (the gate's drain). */
static sim_conn *adopt(int fd) {
    struct sockaddr_in peer;
    socklen_t l = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &l) < 0 || peer.sin_family != AF_INET)
        return NULL;
    for (unsigned i = 0; i < S.nconns; i++) {
        sim_conn *c = &S.conns[i];
        if (!c->backlog || c->fd >= 0 || c->lport != peer.sin_port) continue;
        c->fd = fd;
        c->ino = ino_of(fd);
        trace("conn %d: taken from the listener's queue as fd %d", (int)i, fd);
        return c;
    }
    return NULL;
}

/* A real client connects to the listener: it waits in the kernel's accept queue until the
 * core drains it when the gate closes. */
static void backlog_connect(void) {
    if (S.listener_closed || S.nbacklog >= 6 || S.nconns >= MAXC || S.nconns >= S.o.max_conns)
        return;
    int draining = ug_server_state(S.srv) >= UG_GATE_DRAINING;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(S.srv->listener.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0 || errno == EINPROGRESS;
    if (ok && !draining) { /* loopback: the handshake completes at once */
        struct pollfd p = {.fd = s, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof err;
        ok = poll(&p, 1, 1000) == 1 && getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) == 0 &&
             err == 0;
    }
    struct sockaddr_in me;
    socklen_t ml = sizeof me;
    if (!ok || getsockname(s, (struct sockaddr *)&me, &ml) < 0) {
        close(s);
        return;
    }
    sim_conn *c = &S.conns[S.nconns++];
    memset(c, 0, sizeof *c);
    c->used = c->backlog = 1;
    c->fd = -1;
    c->peer = s;
    c->lport = me.sin_port;
    c->before_close = !draining;
    S.nbacklog++;
    trace("conn %d: a client waits in the listener's queue%s", idx_of(c),
          draining ? " (after the close point)" : "");
}

static sim_conn *conn_for_op(int fd, uint64_t ud, unsigned op, const char *what) {
    if (UG__UD_RESERVED(ud)) {
        violation("%s with a reserved user_data %#llx", what, (unsigned long long)ud);
        return NULL;
    }
    if (UG_UD_OP(ud) != op) violation("%s with user_data of op %u", what, UG_UD_OP(ud));
    sim_conn *c = NULL;
    if (fd >= FD_BASE && fd < FD_BASE + MAXC && S.conns[fd - FD_BASE].used &&
        !S.conns[fd - FD_BASE].backlog) {
        c = &S.conns[fd - FD_BASE];
    } else {
        for (unsigned i = 0; i < S.nconns && !c; i++) {
            sim_conn *o = &S.conns[i];
            check_closed(o);
            if (o->backlog && o->fd == fd && !o->closed) c = o;
        }
        if (!c) c = adopt(fd);
    }
    if (!c) {
        violation("%s on fd %d, not a connection", what, fd);
        return NULL;
    }
    check_closed(c);
    if (c->closed) {
        violation("%s on fd %d after the core closed it", what, fd);
        return NULL;
    }
    uint32_t idx = UG_UD_IDX(ud), gen = UG_UD_GEN(ud);
    if (!c->bound) {
        for (unsigned i = 0; i < S.nconns; i++) {
            sim_conn *o = &S.conns[i];
            if (o != c && o->bound && !o->closed && o->sidx == idx && o->sgen == gen)
                violation("%s: conn %d gets the slot of open conn %u", what, idx_of(c), i);
        }
        c->bound = 1;
        c->sidx = idx;
        c->sgen = gen;
    } else if (c->sidx != idx || c->sgen != gen) {
        violation("%s on conn %d with the user_data of another slot", what, idx_of(c));
    }
    return c;
}

static int sim_create(ug__backend **out, const ug__backend_params *p) {
    S.nbufs = p->recv_buffers < MAXBUF ? p->recv_buffers : MAXBUF;
    S.bufsize = p->recv_buffer_size ? p->recv_buffer_size : 4096;
    *out = &S.be;
    return 0;
}

static void sim_destroy(ug__backend *b) {
    (void)b;
    trace("backend destroyed");
}

static int sim_accept(ug__backend *b, int lfd, uint64_t ud) {
    (void)b;
    trace("accept armed");
    if (UG__UD_RESERVED(ud)) violation("accept with a reserved user_data");
    if (lfd != S.lfd || S.listener_closed) violation("accept on fd %d (listener %d)", lfd, S.lfd);
    if (S.acc_armed || S.acc_fin) violation("accept armed while another is outstanding");
    int e = submit_fault(SK_ACCEPT);
    if (e) return e;
    S.acc_armed = 1;
    S.acc_cancelled = 0;
    S.acc_ud = ud;
    return 0;
}

static int sim_recv(ug__backend *b, int fd, uint64_t ud) {
    (void)b;
    sim_conn *c = conn_for_op(fd, ud, UG_OP_RECV, "recv");
    if (!c) return -EBADF;
    trace("conn %d: recv armed", idx_of(c));
    if (c->recv_armed || c->recv_fin) {
        violation("conn %d: second recv armed", idx_of(c));
        return -EBUSY;
    }
    int e = submit_fault(SK_RECV);
    if (e) {
        /* The core ends the connection when the re-arm after ENOBUFS fails (after data it
         * answers what is buffered first): whatever was in flight may be lost. */
        if (c->last_final == -ENOBUFS) c->lossy = 1;
        return e;
    }
    c->recv_armed = 1;
    c->recv_cancelled = 0;
    c->recv_ud = ud;
    return 0;
}

static void sim_recv_release(ug__backend *b, uint32_t id) {
    (void)b;
    if (id >= S.nbufs || !S.bufs[id].out) {
        violation("buffer %u released but not out (released twice?)", id);
        return;
    }
    free(S.bufs[id].p);
    S.bufs[id].p = NULL;
    S.bufs[id].out = 0;
}

static int sim_send(ug__backend *b, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t ud) {
    (void)b;
    sim_conn *c = conn_for_op(fd, ud, UG_OP_SEND, "send");
    if (!c) return -EBADF;
    if (c->send_armed || c->send_fin) {
        violation("conn %d: second send in flight", idx_of(c));
        return -EBUSY;
    }
    size_t len = 0;
    for (unsigned i = 0; i < iovcnt; i++) len += iov[i].iov_len;
    trace("conn %d: send %zu bytes", idx_of(c), len);
    if (!len) violation("conn %d: send of 0 bytes", idx_of(c));
    if (iovcnt > 8) {
        violation("conn %d: send with %u iovecs", idx_of(c), iovcnt);
        return -EINVAL;
    }
    if (S.max_send && len > S.max_send && !S.growth_reported &&
        !(S.o.waive & SIM_WAIVE_OUTPUT_GROWTH)) {
        S.growth_reported = 1;
        violation("conn %d: one send of %zu bytes: output queued without bound", idx_of(c), len);
    }
    int e = submit_fault(SK_SEND);
    if (e) {
        c->lossy = 1;
        return e;
    }
    if (c->fin) {
        violation("conn %d: send after the core's shutdown(SHUT_WR)", idx_of(c));
        c->send_epipe = 1;
    }
    c->send_copy = malloc(len ? len : 1);
    if (!c->send_copy) abort();
    size_t off = 0;
    for (unsigned i = 0; i < iovcnt; i++) {
        memcpy(c->send_copy + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
        c->send_iov[i] = iov[i];
    }
    c->send_iovcnt = iovcnt;
    c->send_len = len;
    c->send_armed = 1;
    c->send_cancelled = 0;
    c->send_ud = ud;
    if (c->nsends == c->capsends) {
        c->capsends = c->capsends ? c->capsends * 2 : 16;
        c->sends = realloc(c->sends, c->capsends * sizeof *c->sends);
        if (!c->sends) abort();
    }
    c->sends[c->nsends].wire_start = c->wire.len;
    c->sends[c->nsends].dseen = c->dseen;
    c->nsends++;
    return 0;
}

static void check_send_unchanged(sim_conn *c, const char *when) {
    size_t off = 0;
    for (unsigned i = 0; i < c->send_iovcnt; i++) {
        if (memcmp(c->send_iov[i].iov_base, c->send_copy + off, c->send_iov[i].iov_len)) {
            violation("conn %d: send buffer modified while in flight (%s)", idx_of(c), when);
            return;
        }
        off += c->send_iov[i].iov_len;
    }
}

static int sim_cancel(ug__backend *b, uint64_t target) {
    (void)b;
    if (UG__UD_RESERVED(target))
        violation("cancel of a reserved user_data %#llx", (unsigned long long)target);
    int e = submit_fault(SK_CANCEL);
    int hit = 0;
    if (S.acc_armed && S.acc_ud == target) {
        if (!e) S.acc_cancelled = 1;
        hit = 1;
    }
    for (unsigned i = 0; i < S.nconns; i++) {
        sim_conn *c = &S.conns[i];
        if (c->recv_armed && c->recv_ud == target) {
            if (!e) c->recv_cancelled = 1;
            if (e) c->lossy = 1;
            hit = 1;
        }
        if (c->send_armed && c->send_ud == target) {
            if (!e) c->send_cancelled = 1;
            hit = 1;
        }
        if (c->send_ud == target) c->lossy = 1; /* an abort: even if the send just completed */
    }
    trace("cancel %#llx: %s%s", (unsigned long long)target, hit ? "hit" : "nothing armed",
          e ? " (refused)" : "");
    return e;
}

static int sim_timer(ug__backend *b, uint64_t deadline_ns, uint64_t ud) {
    (void)b;
    if (UG__UD_RESERVED(ud)) violation("timer with a reserved user_data");
    int free_i = -1;
    for (int i = 0; i < MAXT; i++) {
        if ((S.timers[i].armed || S.timers[i].fin) && S.timers[i].ud == ud)
            violation("a second timer with user_data %#llx", (unsigned long long)ud);
        if (!S.timers[i].armed && !S.timers[i].fin && free_i < 0) free_i = i;
    }
    int e = submit_fault(SK_TIMER);
    if (e) return e;
    if (free_i < 0) return -EBUSY;
    trace("timer armed at +%lld ms", (long long)((int64_t)(deadline_ns - S.now_ns) / 1000000));
    S.timers[free_i].armed = 1;
    S.timers[free_i].cancelled = 0;
    S.timers[free_i].ud = ud;
    S.timers[free_i].deadline = deadline_ns;
    return 0;
}

static int sim_timer_cancel(ug__backend *b, uint64_t ud) {
    (void)b;
    if (UG__UD_RESERVED(ud)) violation("timer_cancel of a reserved user_data");
    int e = submit_fault(SK_TIMER_CANCEL);
    if (e) return e;
    for (int i = 0; i < MAXT; i++)
        if (S.timers[i].armed && S.timers[i].ud == ud) S.timers[i].cancelled = 1;
    return 0;
}

static void sim_wake(ug__backend *b) {
    (void)b;
    S.woken = 1;
}

static int sim_wait(ug__backend *b, int64_t timeout_ns, uint32_t batch, ug__completion_cb cb,
                    void *ctx);

/* Real descriptors: observe() notices what the core closed or shut down. */
static int sim_shutdown(ug__backend *b, int fd, int how) {
    (void)b;
    return shutdown(fd, how) < 0 ? -errno : 0;
}

static int sim_close(ug__backend *b, int fd) {
    (void)b;
    return close(fd) < 0 ? -errno : 0;
}

static const ug__backend_ops sim_ops = {
    .name = "sim",
    .create = sim_create,
    .destroy = sim_destroy,
    .accept = sim_accept,
    .recv = sim_recv,
    .recv_release = sim_recv_release,
    .send = sim_send,
    .cancel = sim_cancel,
    .timer = sim_timer,
    .timer_cancel = sim_timer_cancel,
    .wait = sim_wait,
    .wake = sim_wake,
    .shutdown = sim_shutdown,
    .close = sim_close,
};

/* ---------------------------------------------------------------- completions ---- */

static bent *push(int kind, int idx, uint64_t ud, int32_t res, uint32_t flags) {
    if (S.nbatch == MAXB) return NULL;
    bent *e = &S.batch[S.nbatch++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->idx = idx;
    e->c.ud = ud;
    e->c.res = res;
    e->c.flags = flags;
    return e;
}

static int room(void) {
    return S.nbatch + 8 < MAXB;
}

static void recv_final(sim_conn *c, int32_t res) {
    if (!c->recv_armed || !room()) return;
    trace("conn %d: recv final %d", idx_of(c), res);
    push(BK_RECV, idx_of(c), c->recv_ud, res, 0);
    c->recv_armed = 0;
    c->recv_fin = 1;
}

static size_t pending(const sim_conn *c) {
    return c->out.len - c->delivered;
}

static int deferred_kind(int k);

/* A request of the connection is live in its handler's hands (known for those with a cancel
 * callback), or held by a middleware: the core parks what arrives and stops reading past its
 * bound. */
static const sim_req *conn_live(const sim_conn *c) {
    for (unsigned k = c->nrq; k-- > 0;) {
        const sim_req *r = &S.reqs[c->rq[k]];
        if (r->mw_held) return r;
        if (r->dispatched) return deferred_kind(r->kind) && r->has_cb && !terminal(r) ? r : NULL;
    }
    return NULL;
}

/* Up to n client bytes in completions of at most a buffer each; the last one ends the
 * multishot recv when final is set. Returns the bytes delivered. */
static size_t recv_data(sim_conn *c, size_t n, int final) {
    size_t done = 0;
    if (c->shut_rd || c->reset) return 0;
    while (n && pending(c) && c->recv_armed && room()) {
        size_t chunk = n < pending(c) ? n : pending(c);
        if (chunk > S.bufsize) chunk = S.bufsize;
        int id = -1;
        for (uint32_t i = 0; i < S.nbufs && id < 0; i++)
            if (!S.bufs[i].out) id = (int)i;
        if (id < 0) { /* the pool is dry: the multishot recv ends */
            recv_final(c, -ENOBUFS);
            break;
        }
        char *p = malloc(chunk);
        if (!p) abort();
        memcpy(p, c->out.p + c->delivered, chunk);
        S.bufs[id].p = p;
        S.bufs[id].out = 1;
        int last = final && (chunk == n || chunk == pending(c));
        bent *e = push(BK_RECV, idx_of(c), c->recv_ud, (int32_t)chunk,
                       UG__CF_BUFFER | (last ? 0 : UG__CF_MORE));
        e->c.data = p;
        e->c.buf_id = (uint32_t)id;
        c->delivered += chunk;
        done += chunk;
        const sim_req *lr = c->recv_cancelled ? NULL : conn_live(c);
        if (lr) {
            /* parked input: 64 KiB, then the recv is cancelled; what one batch carries may
             * still come (posted before the cancel), nothing after. A streamed body goes
             * through (handed out as it comes) with 256 KiB parked before reading pauses.
             * Pipelined requests deferred one after the other (by a middleware) each have
             * their own bound. */
            if (c->live_req != lr->id + 1) c->live_in = 0;
            c->live_req = lr->id + 1;
            c->live_in += chunk;
            size_t bound = (64u << 10) + (size_t)S.nbufs * S.bufsize * 2 + 65536;
            if (lr->kind == K_SBODY) bound += (lr->end - lr->head_end) + (256u << 10);
            if (c->live_in > bound && !c->live_reported) {
                c->live_reported = 1;
                violation("conn %d: %zu bytes read while a request is live (parked input "
                          "unbounded)",
                          idx_of(c), c->live_in);
            }
        } else if (!conn_live(c)) {
            c->live_in = 0;
        }
        n -= chunk;
        if (last) {
            c->recv_armed = 0;
            c->recv_fin = 1;
        }
    }
    if (done) trace("conn %d: %zu client bytes%s", idx_of(c), done, final ? " (final)" : "");
    return done;
}

static void send_done(sim_conn *c, int32_t res) {
    if (!c->send_armed || !room()) return;
    check_send_unchanged(c, "at completion");
    if (res > 0) {
        if ((size_t)res > c->send_len) res = (int32_t)c->send_len;
        sb_add(&c->wire, c->send_copy, (size_t)res);
    } else {
        c->lossy = 1;
    }
    trace("conn %d: send completes %d of %zu", idx_of(c), res, c->send_len);
    push(BK_SEND, idx_of(c), c->send_ud, res, 0);
    free(c->send_copy);
    c->send_copy = NULL;
    c->send_armed = 0;
    c->send_fin = 1;
}

static sim_conn *conn_new(void) {
    if (S.nconns >= S.o.max_conns || S.nconns >= MAXC) return NULL;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return NULL;
    int want = FD_BASE + (int)S.nconns;
    int fd = fcntl(sv[0], F_DUPFD_CLOEXEC, want);
    close(sv[0]);
    if (fd != want) {
        if (fd >= 0) close(fd);
        close(sv[1]);
        return NULL;
    }
    sim_conn *c = &S.conns[S.nconns++];
    memset(c, 0, sizeof *c);
    c->used = 1;
    c->fd = fd;
    c->peer = sv[1];
    S.res->conns++;
    return c;
}

static void accept_one(int final) {
    if (!S.acc_armed || !room()) return;
    sim_conn *c = conn_new();
    if (!c) return;
    trace("conn %d: accepted as fd %d%s", idx_of(c), c->fd, final ? " (final)" : "");
    push(BK_ACCEPT, idx_of(c), S.acc_ud, c->fd, final ? 0 : UG__CF_MORE);
    if (final) {
        S.acc_armed = 0;
        S.acc_fin = 1;
    }
}

static void accept_end(int32_t res) {
    if (!S.acc_armed || !room()) return;
    trace("accept ends: %d", res);
    push(BK_ACCEPT, -1, S.acc_ud, res, 0);
    S.acc_armed = 0;
    S.acc_fin = 1;
}

static void fire_timers(void) {
    for (int i = 0; i < MAXT; i++) {
        if (!S.timers[i].armed || S.timers[i].deadline > S.now_ns || !room()) continue;
        trace("timer %#llx fires", (unsigned long long)S.timers[i].ud);
        push(BK_TIMER, i, S.timers[i].ud, 0, 0);
        S.timers[i].armed = 0;
        S.timers[i].fin = 1;
    }
}

/* What the kernel does by itself: complete cancelled operations (or let them race), EOF and
 * reset to an armed recv, fail sends to a peer that is gone. all: everything; else each
 * with probability 1/2. */
static void kernel_pending(int all) {
    if (S.acc_armed && S.acc_cancelled && (all || rnd(2))) {
        unsigned how = rnd(4);
        if (how == 0) accept_one(0); /* a connection races the cancel, then the cancel */
        if (how == 1) accept_one(1); /* the cancel found nothing: the final completion is an fd */
        accept_end(-ECANCELED);      /* unless that was final */
    }
    for (unsigned i = 0; i < S.nconns; i++) {
        sim_conn *c = &S.conns[i];
        if (!c->used || c->closed) continue;
        if (c->recv_armed && (all || rnd(2))) {
            if (c->recv_cancelled) {
                unsigned how = rnd(4);
                if (how == 0 && pending(c)) recv_data(c, S.bufsize, 0);
                if (how == 1 && pending(c)) recv_data(c, S.bufsize, 1);
                if (how == 2 && c->eof && !pending(c)) recv_final(c, 0);
                recv_final(c, -ECANCELED); /* unless one of the above was final */
            } else if (c->reset) {
                recv_final(c, -ECONNRESET);
            } else if (c->shut_rd || (c->eof && !pending(c))) {
                recv_final(c, 0);
            }
        }
        if (c->send_armed && (all || rnd(2))) {
            if (c->send_cancelled)
                send_done(c, rnd(3) == 0 ? (int32_t)c->send_len : -ECANCELED);
            else if (c->reset)
                send_done(c, rnd(2) ? -ECONNRESET : -EPIPE);
            else if (c->send_epipe)
                send_done(c, -EPIPE);
        }
    }
    for (int i = 0; i < MAXT; i++) {
        if (!S.timers[i].armed || !S.timers[i].cancelled || !room() || !(all || rnd(2))) continue;
        int32_t res = S.timers[i].deadline <= S.now_ns && rnd(2) ? 0 : -ECANCELED;
        push(BK_TIMER, i, S.timers[i].ud, res, 0);
        S.timers[i].armed = 0;
        S.timers[i].fin = 1;
    }
}

/* ---------------------------------------------------------------- the clients ---- */

static const uint16_t statuses[16] = {200, 200, 201, 203, 204, 299, 304, 404,
                                      407, 418, 431, 451, 500, 503, 505, 599};
static const uint32_t sizes[16] = {0,    1,    2,    10,    100,   500,   1000,  1500,
                                   4000, 4096, 5000, 10000, 16384, 30000, 65000, 65536};
static const uint8_t kinds[16] = {K_IMM,          K_IMM,         K_IMM,          K_TIMER,
                                  K_TIMER,        K_POST,        K_POST_SELF,    K_STREAM,
                                  K_STREAM_LATER, K_FORGET_DONE, K_FORGET_LATER, K_TWICE,
                                  K_NOTFOUND,     K_METHOD,      K_BADHOST,      K_LIMIT};

static char req_byte(uint32_t id, size_t i) {
    return (char)('a' + (id * 31u + i * 7u) % 26u);
}

static void resp_fill(uint32_t id, size_t len) {
    for (size_t i = 0; i < len; i++) S.resp[i] = (char)('A' + (id * 17u + i * 3u) % 26u);
}

static int resp_matches(uint32_t id, const char *p, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (p[i] != (char)('A' + (id * 17u + i * 3u) % 26u)) return 0;
    return 1;
}

static sim_req *req_new(sim_conn *c, int kind) {
    if (S.nreqs >= MAXR) return NULL;
    sim_req *r = &S.reqs[S.nreqs];
    memset(r, 0, sizeof *r);
    r->id = S.nreqs++;
    r->conn = idx_of(c);
    r->kind = (uint8_t)kind;
    r->prev = c->nrq ? c->rq[c->nrq - 1] : -1;
    r->minor = 1;
    if (c->nrq == c->caprq) {
        c->caprq = c->caprq ? c->caprq * 2 : 8;
        c->rq = realloc(c->rq, c->caprq * sizeof *c->rq);
        if (!c->rq) abort();
    }
    c->rq[c->nrq++] = (int)r->id;
    S.res->requests++;
    return r;
}

/* How a streamed body's handler reads it. */
enum sb_mode {
    SB_END,         /* reads it all, answers with the last piece */
    SB_END_LATER,   /* reads it all, answers from a timer after the last piece */
    SB_NOREAD,      /* answers in the handler without reading (no 100 Continue) */
    SB_EARLY,       /* answers with the first piece that has bytes (before the end) */
    SB_EARLY_TIMER, /* reads, and answers from a timer whether the body has ended or not */
    SB_STREAM,      /* streams its answer (ug_resp_start) while it reads, a chunk per piece */
    SB_NMODES
};

static uint32_t fnv32(uint32_t h, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}
#define FNV32_0 2166136261u

/* A streamed body's size: mostly small, now and then up to the route's limit or just past it
 * (413: before the body for a Content-Length, mid-body for a chunked one). */
static uint32_t sb_len_pick(void) {
    uint32_t lim = S.sb_limit;
    switch (rnd(8)) {
    case 0:
        return 0;
    case 1:
    case 2:
    case 3:
        return rnd(lim < 3000 ? lim : 3000);
    case 4:
        return rnd(lim + 1);
    case 5:
        return lim - rnd(3);
    case 6:
        return 1 + rnd(400);
    default:
        return lim + 1 + rnd(2000);
    }
}

/* A request from three spec bytes (see the kinds and tables above). Kinds 1 and 2 (an
 * immediate answer) with content type 3 (text/plain, as 0) are a streamed body instead: 1 in
 * 32 requests. */
static void add_request(sim_conn *c, uint8_t r0, uint8_t r1, uint8_t r2) {
    if (c->eof || c->reset) return;
    int kind = kinds[r0 & 15];
    if (((r0 & 15) == 1 || (r0 & 15) == 2) && (r2 >> 6) == 3) kind = K_SBODY;
    sim_req *r = req_new(c, kind);
    if (!r) return;
    const ug_config *cfg = &S.cfg;
    /* r0 >> 4: [1:0] GET, HEAD, POST, GET; [3:2] 1.1, 1.1, 1.0, close */
    unsigned fl = r0 >> 4;
    r->head = (fl & 3) == 1;
    r->post = (fl & 3) == 2 || kind == K_SBODY;
    if (kind == K_SBODY) r->head = 0;
    r->minor = (fl >> 2) == 2 ? 0 : 1;
    r->want_close = (fl >> 2) == 3 || ((fl >> 2) == 2 && rnd(2));
    r->status = statuses[r1 & 15];
    r->resp_len = sizes[r1 >> 4];
    r->nhdrs = r2 & 3;
    r->expect = (r2 & 4) && r->post && r->minor;
    r->chunked = (r2 & 8) && r->post && r->minor;
    unsigned pad = (r2 >> 4) & 3;
    r->ctype = r2 >> 6;
    r->delay_ms = 1 + rnd(kind == K_STREAM_LATER ? 300 : 2500);
    if (r->post)
        r->body_len = rnd(cfg->max_body_bytes < 3000 ? (unsigned)cfg->max_body_bytes : 3000);
    if (kind == K_METHOD && r->post) r->post = 0, r->body_len = 0;
    if (kind == K_LIMIT && pad == 2) r->post = 1, r->chunked = 0, r->expect = 0;
    int sb_over = 0;
    if (kind == K_SBODY) {
        r->ctype = 0;
        r->body_len = sb_len_pick();
        sb_over = r->body_len > S.sb_limit;
        if (sb_over) r->errs = E413;
        r->sb_mode = (uint8_t)rnd(SB_NMODES + 2); /* the first two twice as often */
        if (r->sb_mode >= SB_NMODES) r->sb_mode -= SB_NMODES;
        r->sb_pauses =
            (r->sb_mode == SB_END || r->sb_mode == SB_END_LATER || r->sb_mode == SB_STREAM) &&
            rnd(2);
        r->sb_trailers = r->chunked && rnd(2);
        r->sb_delay = 1 + rnd(40);
        r->delay_ms = r->sb_delay;
        if (sb_over && !r->chunked) /* refused at its head: the client sends some of it */
            r->body_len = 200;
    }

    sbuf h = {0};
    const char *method = r->head ? "HEAD" : r->post ? "POST" : (rnd(8) == 0 ? "DELETE" : "GET");
    /* a GET route (which answers HEAD too) now and then, for GET and HEAD */
    r->get_route = kind <= K_TWICE && (r->head || !strcmp(method, "GET")) && rnd(4) == 0;
    sb_printf(&h, "%s ", method);
    if (kind == K_NOTFOUND)
        sb_printf(&h, "/none/%u", r->id);
    else if (kind == K_METHOD)
        sb_str(&h, "/post-only");
    else if (kind == K_SBODY)
        sb_printf(&h, "/ks/%u", r->id);
    else
        sb_printf(&h, "%s/%u", r->get_route ? "/kg" : "/k", r->id);
    if (kind == K_LIMIT && pad == 1) {
        sb_str(&h, "?u=");
        for (uint32_t i = 0; i < cfg->max_uri_bytes + 50; i++) sb_add(&h, "u", 1);
        r->errs = E414;
    } else if (rnd(4) == 0) {
        sb_printf(&h, "?q=%u&x", r->id);
    }
    sb_printf(&h, " HTTP/1.%u\r\nHost: sim\r\n", r->minor);
    if (kind == K_BADHOST) {
        sb_str(&h, "Host: other\r\n");
        r->errs = E400;
    }
    sb_printf(&h, "X-Id: %u\r\n", r->id);
    if (r->want_close && r->minor)
        sb_str(&h, "Connection: close\r\n");
    else if (!r->want_close && !r->minor)
        sb_str(&h, "Connection: keep-alive\r\n");
    if (kind == K_LIMIT && pad == 2) {
        uint64_t over = cfg->max_body_bytes + 1;
        sb_printf(&h, "Content-Length: %llu\r\n", (unsigned long long)over);
        r->errs = E413;
        r->body_len = over > 200 ? 200 : (uint32_t)over; /* the client sends some of it */
    } else if (sb_over && !r->chunked) {
        sb_printf(&h, "Content-Length: %u\r\n", S.sb_limit + 1 + rnd(2000));
    } else if (r->post && r->chunked) {
        sb_str(&h, "Transfer-Encoding: chunked\r\n");
    } else if (r->post) {
        sb_printf(&h, "Content-Length: %u\r\n", r->body_len);
    }
    if (r->expect) sb_str(&h, "Expect: 100-continue\r\n");
    if (kind == K_LIMIT && pad == 0) {
        sb_str(&h, "X-Pad: ");
        for (uint32_t i = 0; i < cfg->max_header_bytes + 100; i++) sb_add(&h, "p", 1);
        sb_str(&h, "\r\n");
        r->errs = E431;
    } else if (kind == K_LIMIT && pad == 3) {
        for (uint32_t i = 0; i < cfg->max_headers + 4; i++) sb_printf(&h, "X-H%u: v\r\n", i);
        r->errs = E431;
    } else if (pad == 1) {
        sb_str(&h, "X-Pad: ");
        for (int i = 0; i < 100; i++) sb_add(&h, "q", 1);
        sb_str(&h, "\r\n");
    } else if (pad == 2) {
        sb_str(&h, "X-Pad: ");
        for (uint32_t i = 0; i < cfg->max_header_bytes / 2; i++) sb_add(&h, "q", 1);
        sb_str(&h, "\r\n");
    } else if (pad == 3 && cfg->max_headers > 12) {
        for (uint32_t i = 0; i < cfg->max_headers - 10; i++) sb_printf(&h, "X-H%u: v\r\n", i);
    }
    if (kind == K_LIMIT && pad == 1) r->errs = E414;
    sb_str(&h, "\r\n");
    r->start = c->out.len;
    sb_add(&c->out, h.p, h.len);
    r->head_end = c->out.len;
    sb_free(&h);
    if (r->post) {
        char *body = malloc(r->body_len + 1);
        if (!body) abort();
        for (uint32_t i = 0; i < r->body_len; i++) body[i] = req_byte(r->id, i);
        r->sb_hash = fnv32(FNV32_0, body, r->body_len);
        if (r->chunked) {
            uint32_t off = 0, most = kind == K_SBODY && r->body_len > 8000 ? 8000 : 700;
            while (off < r->body_len) {
                uint32_t n = 1 + rnd(r->body_len - off < most ? r->body_len - off : most);
                char line[32];
                snprintf(line, sizeof line, rnd(4) ? "%x\r\n" : "%X;ext=1\r\n", n);
                sb_str(&c->out, line);
                sb_add(&c->out, body + off, n);
                sb_str(&c->out, "\r\n");
                off += n;
            }
            if (r->sb_trailers) {
                sb_printf(&c->out, "0\r\nX-Sum: %08x\r\n", r->sb_hash);
                if (r->sb_delay & 1) sb_str(&c->out, "X-Other:  v \r\n");
                sb_str(&c->out, "\r\n");
            } else {
                sb_str(&c->out, "0\r\n\r\n");
            }
        } else {
            sb_add(&c->out, body, r->body_len);
        }
        free(body);
    }
    r->end = c->out.len;
    trace("conn %d: request %u queued: %s %s status %u len %u%s%s%s body %u%s mode %u", idx_of(c),
          r->id, kind_name[kind], method, r->status, r->resp_len, r->minor ? "" : " 1.0",
          r->want_close ? " close" : "", r->expect ? " expect" : "", r->body_len,
          r->chunked ? " chunked" : "", r->sb_mode);
}

static void add_raw(sim_conn *c, const uint8_t *p, size_t n) {
    if (c->eof || c->reset) return;
    sim_req *r = req_new(c, K_RAW);
    if (!r) return;
    r->start = c->out.len;
    sb_add(&c->out, p, n);
    r->head_end = r->end = c->out.len;
    r->errs = E400 | E413 | E414 | E431;
    trace("conn %d: %zu raw bytes", idx_of(c), n);
}

/* ---------------------------------------------------------------- the handlers ---- */

static sim_req *req_of(ug_request *req) {
    ug_str v = ug_req_header(req, "X-Id");
    if (!v.ptr || !v.len || v.len > 9) return NULL;
    uint32_t id = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9') return NULL;
        id = id * 10 + (uint32_t)(v.ptr[i] - '0');
    }
    if (id >= S.nreqs || S.reqs[id].kind == K_RAW) return NULL;
    return &S.reqs[id];
}

static const char *ctype_of(const sim_req *r) {
    switch (r->ctype) {
    case 1:
        return NULL;
    case 2:
        return "application/x-very-long-content-type-name-for-testing; charset=utf-8; "
               "boundary=0123456789abcdef0123456789";
    default:
        return "text/plain";
    }
}

static int add_headers(ug_request *req, sim_req *r) {
    char v[24];
    snprintf(v, sizeof v, "%u", r->id);
    int rc = ug_resp_header(req, "X-Req", v);
    if (rc) {
        if (rc != -ENOMEM) violation("request %u: ug_resp_header: %d", r->id, rc);
        r->xreq_missing = 1;
    }
    for (unsigned i = 0; i < r->nhdrs; i++) {
        char name[16], val[400];
        snprintf(name, sizeof name, "X-Extra-%u", i);
        size_t n = 40 + 150 * i;
        for (size_t k = 0; k < n; k++) val[k] = (char)('a' + k % 26);
        val[n] = 0;
        rc = ug_resp_header(req, name, val);
        if (rc && rc != -ENOMEM) violation("request %u: ug_resp_header: %d", r->id, rc);
    }
    if (r->nhdrs == 3 && ug_resp_header(req, "X-Bad", "a\r\nInjected: 1") != -EINVAL)
        violation("request %u: a header value with CRLF was accepted", r->id);
    return 0;
}

static int answer(ug_request *req, sim_req *r) {
    add_headers(req, r);
    resp_fill(r->id, r->resp_len);
    int rc = ug_resp_send(req, r->status, ctype_of(r), S.resp, r->resp_len);
    trace("request %u answered %u: %d", r->id, r->status, rc);
    if (rc == 0) {
        r->answered = 1;
        return 0;
    }
    if (rc != -ENOMEM) violation("request %u: ug_resp_send: %d", r->id, rc);
    r->answer_failed = 1;
    return rc;
}

static void on_cancel(ug_request *req, ug_cancel_reason why, void *user);

static void answer_sibling(void) {
    /* Applications answer other requests from callbacks (a pub/sub fan-out): any deferred
     * request waiting for the world's post. */
    for (unsigned i = 0; i < S.nreqs; i++) {
        sim_req *r = &S.reqs[i];
        if (!r->post_pending || terminal(r)) continue;
        ug_request *q = ug_req_find(S.srv, r->ug_id);
        if (!q) {
            violation("request %u: ug_req_find lost a live request", r->id);
            return;
        }
        r->post_pending = 0;
        trace("request %u answered from another request's callback", r->id);
        answer(q, r);
        return;
    }
}

static void on_cancel(ug_request *req, ug_cancel_reason why, void *user) {
    sim_req *r = user;
    S.cancels_seen++;
    S.res->cancels++;
    trace("request %u: cancel callback, reason %d", r->id, (int)why);
    if (r->cancelled) violation("request %u: cancel callback fired twice", r->id);
    if (r->answered) violation("request %u: cancel callback after its answer", r->id);
    /* A streamed body being read, not held back, is under the body timeout (408 between two
     * pieces); else the handler timeout runs (503). Which one fired: the status the server
     * just queued (unless that failed). One race is allowed: reading began (or resumed) in
     * the loop turn whose timeouts found the handler's deadline already past. */
    int reading = r->kind == K_SBODY && r->sb_reading && !r->sb_paused && !r->sb_end;
    /* (a response already started: only the body timeout applies) */
    int body_to =
        why == UG_CANCEL_TIMEOUT && r->kind == K_SBODY && (r->sb_streaming || req->status == 408);
    int handler_to =
        why == UG_CANCEL_TIMEOUT && !body_to && (r->kind != K_SBODY || req->status == 503);
    if (body_to && !reading)
        violation("request %u: body timeout for a body not being read (paused %u, end %u)", r->id,
                  r->sb_paused, r->sb_end);
    if (handler_to && reading && r->sb_step != S.steps)
        violation("request %u: handler timeout while its body is being read", r->id);
    if (body_to) {
        S.body_timeouts++;
        if (!S.cfg.body_timeout_ms) violation("request %u: body timeout while off", r->id);
        r->sb_body_to = 1;
    } else if (handler_to) {
        S.timeout_cancels++;
        if (!S.cfg.handler_timeout_ms) violation("request %u: handler timeout while off", r->id);
        r->timed_out = 1;
    } else if (why == UG_CANCEL_TIMEOUT) {
        /* a streamed body's request whose 408 or 503 could not be queued (out of memory):
         * which timeout it was is not known, and the connection fails */
        r->timed_out = 1;
        S.conns[r->conn].lossy = 1;
    } else if (why == UG_CANCEL_BODY) {
        /* 413 mid-body: only a chunked body over /ks/'s limit is refused (no framing errors
         * are generated) */
        if (r->kind != K_SBODY || !(r->errs & E413) || !r->sb_reading)
            violation("request %u (%s): cancelled for its body, which is fine", r->id,
                      kind_name[r->kind]);
    } else {
        S.conns[r->conn].lossy = 1;
    }
    if (why == UG_CANCEL_DEADLINE && !S.shutdown_asked && !S.wait_failed && !S.hang)
        violation("request %u: DEADLINE cancel without a shutdown", r->id);
    if (why == UG_CANCEL_SERVER_FREE && (S.clean || S.wait_failed))
        violation("request %u: still live when the run ended (SERVER_FREE)", r->id);
    r->cancelled = 1;
    r->cancel_reason = (uint8_t)why;
    /* Two extra headers make it certain (for scripts that need it), else now and then. */
    if (S.in_run && (r->nhdrs == 2 || rnd(4) == 0)) answer_sibling();
}

static void timer_answer(ug_request *req, void *user) {
    sim_req *r = user;
    if (terminal(r)) violation("request %u: its timer fired after it ended", r->id);
    if (ug_req_find(S.srv, r->ug_id) != req) violation("request %u: ug_req_find disagrees", r->id);
    answer(req, r);
}

static void post_answer(ug_server *srv, void *user) {
    sim_req *r = &S.reqs[(uintptr_t)user];
    ug_request *req = ug_req_find(srv, r->ug_id);
    if (!req) {
        if (!terminal(r) && r->has_cb) violation("request %u: ug_req_find lost it", r->id);
        return;
    }
    if (terminal(r)) violation("request %u: ug_req_find found it after it ended", r->id);
    answer(req, r);
}

static int stream_piece(ug_request *req, sim_req *r) {
    uint32_t left = r->resp_len - r->stream_off;
    uint32_t n = left < r->resp_len / 3 + 1 ? left : r->resp_len / 3 + 1;
    if (!n) return 0;
    resp_fill(r->id, r->resp_len);
    int rc = ug_resp_write(req, S.resp + r->stream_off, n);
    if (rc == 0)
        r->stream_off += n;
    else if (rc != -ENOMEM && rc != -ENOBUFS)
        violation("request %u: ug_resp_write: %d", r->id, rc);
    return rc;
}

static void stream_step(ug_request *req, void *user) {
    sim_req *r = user;
    if (terminal(r)) violation("request %u: its timer fired after it ended", r->id);
    stream_piece(req, r);
    if (r->stream_off == r->resp_len) {
        int rc = ug_resp_end(req);
        if (rc == 0) {
            r->answered = 1;
            return;
        }
        if (rc != -ENOMEM) violation("request %u: ug_resp_end: %d", r->id, rc);
    }
    ug_req_timer(req, r->delay_ms, stream_step, r); /* ENOMEM: ends when the client goes */
}

/* The stage (sim_req.mw_stage) a request has reached before the element at point runs:
 * 1 middleware a, 2 b, 3 /ks/'s route middleware, 4 the handler. */
static uint8_t stage_before(int point, int sbody) {
    uint8_t st = 0;
    if (point > 1 && (S.mw_on & 1)) st = 1;
    if (point > 2 && (S.mw_on & 2)) st = 2;
    if (point > 3 && sbody && S.mw_on) st = 3;
    return st;
}

/* What every handler checks of the request it is given. */
static void dispatch_checks(ug_request *req, sim_req *r) {
    sim_conn *c = &S.conns[r->conn];
    int sbody = r->kind == K_SBODY;
    S.res->dispatched++;
    trace("request %u dispatched (%s)", r->id, kind_name[r->kind]);
    if (r->dispatched) violation("request %u dispatched twice", r->id);
    r->dispatched = 1;
    if (r->mw_stage != stage_before(4, sbody))
        violation("request %u reached its handler after middleware stage %u", r->id, r->mw_stage);
    if (req->conn->fd != c->fd)
        violation("request %u dispatched on fd %d, sent on fd %d", r->id, req->conn->fd, c->fd);
    /* A streamed body's request is dispatched at the end of its head. */
    if (c->delivered < (sbody ? r->head_end : r->end))
        violation("request %u dispatched before all of it arrived", r->id);
    if (r->errs && !(sbody && r->chunked)) /* a chunked body crosses its limit mid-body */
        violation("request %u (%s) should have been refused", r->id, kind_name[r->kind]);
    char path[32];
    snprintf(path, sizeof path, "%s/%u", sbody ? "/ks" : r->get_route ? "/kg" : "/k", r->id);
    ug_str p = ug_req_path(req);
    if (p.len != strlen(path) || memcmp(p.ptr, path, p.len))
        violation("request %u: the handler sees path %.*s", r->id, (int)(p.len < 64 ? p.len : 64),
                  p.ptr);
    ug_str b = ug_req_body(req);
    int body_ok = b.len == (sbody ? 0 : r->body_len);
    for (size_t i = 0; body_ok && i < b.len; i++) body_ok = b.ptr[i] == req_byte(r->id, i);
    if (!body_ok)
        violation("request %u: body of %zu bytes differs from the %u sent%s", r->id, b.len,
                  r->body_len, sbody ? " (streamed: none buffered)" : "");
    if (r->prev >= 0) {
        sim_req *pr = &S.reqs[r->prev];
        if (pr->dispatched && !terminal(pr) && pr->has_cb)
            violation("request %u dispatched while request %u is live", r->id, pr->id);
    }
    r->ug_id = ug_req_id(req);
    if (!r->ug_id) violation("request %u: ug_req_id is 0", r->id);
}

static uint64_t misuse_now(void) {
    ug_stats st;
    ug_server_stats(S.srv, &st);
    return st.middleware_misuse;
}

static ug_handler_result h_main(ug_request *req, void *user) {
    (void)user;
    sim_req *r = req_of(req);
    if (!r || r->kind == K_SBODY) { /* raw bytes that happen to parse */
        ug_resp_send(req, 200, NULL, "raw", 3);
        return UG_DONE;
    }
    dispatch_checks(req, r);
    switch (r->kind) {
    case K_IMM:
        if (answer(req, r)) r->gave_up = 1;
        return UG_DONE;
    case K_TWICE:
        if (answer(req, r)) {
            r->gave_up = 1;
            return UG_DONE;
        }
        uint64_t m0 = misuse_now();
        if (ug_resp_send(req, 200, NULL, "x", 1) != -EALREADY ||
            ug_resp_header(req, "X-Late", "1") != -EALREADY ||
            ug_resp_start(req, 200, NULL) != -EALREADY || ug_resp_end(req) != -EALREADY)
            violation("request %u: a second answer was not refused", r->id);
        /* ugate.h: a second answer is misuse, counted (and that is all the workload does
         * wrong on purpose, besides a second ug_next: see mw_b) */
        uint64_t m = misuse_now() - m0;
        if (!m) violation("request %u: a second answer not counted as misuse", r->id);
        S.misuse_expected += m;
        return UG_DONE;
    case K_TIMER:
        ug_req_on_cancel(req, on_cancel, r);
        r->has_cb = 1;
        if (ug_req_timer(req, r->delay_ms, timer_answer, r) == 0) return UG_LATER;
        if (answer(req, r)) r->gave_up = 1;
        return UG_DONE;
    case K_POST:
        ug_req_on_cancel(req, on_cancel, r);
        r->has_cb = 1;
        r->post_pending = 1;
        return UG_LATER;
    case K_POST_SELF:
        ug_req_on_cancel(req, on_cancel, r);
        r->has_cb = 1;
        if (ug_server_post(S.srv, post_answer, (void *)(uintptr_t)r->id)) r->post_pending = 1;
        return UG_LATER;
    case K_STREAM:
    case K_STREAM_LATER: {
        add_headers(req, r);
        int rc = ug_resp_start(req, r->status, ctype_of(r));
        if (rc) {
            if (rc != -ENOMEM) violation("request %u: ug_resp_start: %d", r->id, rc);
            r->gave_up = 1;
            return UG_DONE;
        }
        if (r->kind == K_STREAM_LATER) {
            ug_req_on_cancel(req, on_cancel, r);
            r->has_cb = 1;
            r->truncated_ok = 1; /* counts only if it is cancelled */
            if (ug_req_timer(req, r->delay_ms, stream_step, r) == 0) return UG_LATER;
            r->has_cb = 0;
            ug_req_on_cancel(req, NULL, NULL);
        }
        for (int i = 0; i < 4 && r->stream_off < r->resp_len; i++)
            if (stream_piece(req, r)) break;
        if (r->stream_off == r->resp_len) {
            rc = ug_resp_end(req);
            if (rc == 0) {
                r->answered = 1;
                return UG_DONE;
            }
            if (rc != -ENOMEM) violation("request %u: ug_resp_end: %d", r->id, rc);
        }
        r->truncated_ok = 1; /* returned mid-stream: the server cuts it and closes */
        r->gave_up = 1;
        S.conns[r->conn].lossy = 1;
        return UG_DONE;
    }
    case K_FORGET_DONE:
        r->gave_up = 1;
        return UG_DONE;
    case K_FORGET_LATER:
        if (r->resp_len & 1) {
            ug_req_on_cancel(req, on_cancel, r);
            r->has_cb = 1;
        }
        return UG_LATER;
    default:
        violation("request %u (%s) reached the handler", r->id, kind_name[r->kind]);
        ug_resp_send(req, 200, NULL, NULL, 0);
        return UG_DONE;
    }
}

/* ---------------------------------------------------------------- streamed bodies ---- */

static void oc_register(ug_request *req, sim_req *r, int order);

/* Answer a streamed body's request with what it read: X-Body is "<bytes>-<fnv32>", checked
 * against the body sent when the answer came after the body's end. One attempt only (a
 * failed answer leaves its fields in the list): the handler timeout or the client ends it. */
static void sb_answer(ug_request *req, sim_req *r) {
    if (r->answer_failed || terminal(r)) return;
    char v[40];
    snprintf(v, sizeof v, "%u-%08x", r->sb_got, r->sb_run_hash);
    int rc = ug_resp_header_set(req, "X-Body", v);
    if (rc && rc != -ENOMEM) violation("request %u: ug_resp_header_set: %d", r->id, rc);
    r->sb_xbody_ok = rc == 0;
    /* answered with its body still coming: the response must close the connection */
    int open = !r->sb_end && (r->chunked || r->body_len > 0);
    int at_end = r->sb_end;
    if (answer(req, r) == 0) {
        r->sb_open_answer = (uint8_t)open;
        r->sb_end_answer = (uint8_t)at_end;
    }
}

static void sb_timer_answer(ug_request *req, void *user) {
    sim_req *r = user;
    if (terminal(r)) violation("request %u: its timer fired after it ended", r->id);
    if (ug_req_find(S.srv, r->ug_id) != req) violation("request %u: ug_req_find disagrees", r->id);
    sb_answer(req, r);
}

static void sb_resume(ug_request *req, void *user) {
    sim_req *r = user;
    if (terminal(r)) violation("request %u: its timer fired after it ended", r->id);
    if (!r->sb_paused) violation("request %u: resumed while not paused", r->id);
    S.sb_in_call = 1;
    int rc = ug_req_body_resume(req);
    S.sb_in_call = 0;
    if (rc) violation("request %u: ug_req_body_resume: %d", r->id, rc);
    r->sb_paused = 0;
    r->sb_step = S.steps;
}

/* SB_STREAM: the answer's head now (Connection: close if the body is still coming); its
 * body follows, a chunk per piece read. Returns 0, or ENOMEM's code. */
static int sb_stream_start(ug_request *req, sim_req *r) {
    add_headers(req, r);
    int rc = ug_resp_start(req, r->status, ctype_of(r));
    if (rc) {
        if (rc != -ENOMEM) violation("request %u: ug_resp_start: %d", r->id, rc);
        return rc;
    }
    r->sb_streaming = 1;
    r->truncated_ok = 1; /* cut if its body fails (413, 408) or the client goes */
    r->sb_open_answer = !r->sb_end && (r->chunked || r->body_len > 0);
    return 0;
}

/* SB_STREAM at the body's end: the rest of the answer, then its end (or from timers). */
static void sb_stream_finish(ug_request *req, sim_req *r) {
    for (int i = 0; i < 8 && r->stream_off < r->resp_len; i++)
        if (stream_piece(req, r)) break;
    if (r->stream_off == r->resp_len) {
        int rc = ug_resp_end(req);
        if (rc == 0) {
            r->answered = r->sb_end_answer = 1;
            return;
        }
        if (rc != -ENOMEM) violation("request %u: ug_resp_end: %d", r->id, rc);
    }
    ug_req_timer(req, r->delay_ms, stream_step, r); /* ENOMEM: ends when the client goes */
}

static void sb_piece(ug_request *req, const void *data, size_t len, int end, void *user) {
    sim_req *r = user;
    const char *d = data;
    trace("request %u: body piece of %zu bytes%s", r->id, len, end ? " (end)" : "");
    if (S.sb_in_call) violation("request %u: a body piece inside read_body or resume", r->id);
    if (terminal(r)) violation("request %u: a body piece after it ended", r->id);
    if (r->sb_end) violation("request %u: a body piece after the last one", r->id);
    if (r->sb_paused) violation("request %u: a body piece while paused", r->id);
    if (!len && !end) violation("request %u: an empty body piece", r->id);
    if (r->sb_got + len > r->body_len) {
        violation("request %u: %u + %zu body bytes, %u sent", r->id, r->sb_got, len, r->body_len);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (d[i] != req_byte(r->id, r->sb_got + i)) {
            violation("request %u: body byte %zu differs", r->id, (size_t)r->sb_got + i);
            break;
        }
    }
    r->sb_got += (uint32_t)len;
    S.res->pieces++;
    r->sb_run_hash = fnv32(r->sb_run_hash, d, len);
    if (r->sb_got > S.sb_limit)
        violation("request %u: %u body bytes, over the limit", r->id, r->sb_got);
    if (ug_req_body_bytes(req) != r->sb_got)
        violation("request %u: ug_req_body_bytes %llu, %u handed out", r->id,
                  (unsigned long long)ug_req_body_bytes(req), r->sb_got);
    if (end) {
        r->sb_end = 1;
        S.res->sbody_ends++;
        if (r->sb_got != r->body_len)
            violation("request %u: the body ends after %u of its %u bytes", r->id, r->sb_got,
                      r->body_len);
        if (ug_req_body_pause(req) != -EINVAL)
            violation("request %u: paused after its body's end", r->id);
        ug_str t = ug_req_trailer(req, "x-sum");
        char want[16];
        snprintf(want, sizeof want, "%08x", r->sb_hash);
        if (r->sb_trailers ? !t.ptr || t.len != 8 || memcmp(t.ptr, want, 8) : t.ptr != NULL)
            violation("request %u: trailer X-Sum %.*s, %s expected", r->id,
                      t.ptr ? (int)(t.len < 20 ? t.len : 20) : 6, t.ptr ? t.ptr : "absent",
                      r->sb_trailers ? want : "none");
        if (r->sb_trailers && (r->sb_delay & 1)) {
            t = ug_req_trailer(req, "X-OTHER");
            if (!t.ptr || t.len != 1 || t.ptr[0] != 'v')
                violation("request %u: trailer X-Other wrong or missing", r->id);
        }
        if (r->sb_mode == SB_STREAM) {
            if (r->sb_streaming) sb_stream_finish(req, r);
            if (!r->sb_streaming && !r->answer_failed && sb_stream_start(req, r) == 0)
                sb_stream_finish(req, r);
            return;
        }
        if (r->sb_mode == SB_END_LATER && ug_req_timer(req, r->sb_delay, sb_timer_answer, r) == 0)
            return;
        if (r->sb_mode != SB_EARLY_TIMER) sb_answer(req, r);
        return;
    }
    if (r->sb_mode == SB_STREAM && r->sb_streaming && len) stream_piece(req, r);
    if (r->sb_mode == SB_EARLY && len) {
        sb_answer(req, r);
        return;
    }
    if (r->sb_pauses && len && rnd(2)) { /* hold the rest back, let it come from a timer */
        if (ug_req_body_pause(req)) violation("request %u: ug_req_body_pause failed", r->id);
        r->sb_paused = 1;
        S.res->pauses++;
        if (ug_req_timer(req, 1 + rnd(20), sb_resume, r)) sb_resume(req, r); /* ENOMEM */
    }
}

static ug_handler_result h_sbody(ug_request *req, void *user) {
    (void)user;
    sim_req *r = req_of(req);
    if (!r || r->kind != K_SBODY) { /* raw bytes that happen to parse */
        ug_resp_send(req, 200, NULL, "raw", 3);
        return UG_DONE;
    }
    dispatch_checks(req, r);
    S.res->sbodies++;
    r->sb_run_hash = FNV32_0;
    ug_req_on_cancel(req, on_cancel, r);
    r->has_cb = 1;
    oc_register(req, r, 2);
    if (ug_req_body_resume(req) != -EINVAL) violation("request %u: resumed before reading", r->id);
    /* SB_STREAM: its head before reading (then no 100 Continue), or just after */
    int start_first = r->sb_mode == SB_STREAM && (r->sb_delay & 2);
    if (start_first && sb_stream_start(req, r)) {
        r->gave_up = 1;
        return UG_DONE;
    }
    if (r->sb_mode == SB_NOREAD) {
        sb_answer(req, r);
        if (!r->answered) r->gave_up = 1;
        return UG_DONE;
    }
    S.sb_in_call = 1;
    int rc = ug_req_read_body(req, sb_piece, r);
    S.sb_in_call = 0;
    if (rc) { /* -ENOMEM (its 100 Continue): answer without reading */
        if (rc != -ENOMEM || r->sb_streaming)
            violation("request %u: ug_req_read_body: %d", r->id, rc);
        if (r->sb_streaming) { /* (not reached: no 100 Continue after a response's head) */
            r->gave_up = 1;
            return UG_DONE;
        }
        sb_answer(req, r);
        if (!r->answered) r->gave_up = 1;
        return UG_DONE;
    }
    r->sb_reading = r->sb_read_ok = 1;
    r->sb_cont = r->expect && !r->sb_streaming; /* ugate.h: never after a response's head */
    r->sb_step = S.steps;
    if (r->sb_mode == SB_STREAM && !r->sb_streaming && sb_stream_start(req, r))
        r->answer_failed = 1; /* ENOMEM: no answer; the handler timeout or the client ends it */
    if (ug_req_read_body(req, sb_piece, r) != -EALREADY)
        violation("request %u: a second ug_req_read_body accepted", r->id);
    if (r->sb_mode == SB_EARLY_TIMER && ug_req_timer(req, r->sb_delay, sb_timer_answer, r))
        r->sb_mode = SB_END; /* ENOMEM: answer at the end instead */
    return UG_LATER;
}

/* ---------------------------------------------------------------- middlewares ---- */

/* Completion callbacks: each runs once, for its request, the last registered first, all of
 * them before the server's hooks (on_done), with the request's views still readable. */
static void oc_cb(const ug_request *req, const ug_completion *info, void *user) {
    unsigned t = (unsigned)(uintptr_t)user;
    if (t >= S.noc) {
        violation("a completion callback with a token never given out");
        return;
    }
    if (S.oc[t].ran++)
        violation("request %llx: a completion callback ran twice", (unsigned long long)S.oc[t].id);
    if (info->request_id != S.oc[t].id)
        violation("a completion callback registered for %llx told of %llx",
                  (unsigned long long)S.oc[t].id, (unsigned long long)info->request_id);
    if (S.oc_cur == S.oc[t].id && S.oc[t].order >= S.oc_cur_order)
        violation("request %llx: completion callback %u after %u (the last registered runs first)",
                  (unsigned long long)S.oc[t].id, S.oc[t].order, S.oc_cur_order);
    S.oc_cur = S.oc[t].id;
    S.res->completions++;
    S.oc_cur_order = S.oc[t].order;
    unsigned k = (unsigned)(S.oc[t].id >> UG_ID_SEQ_SHIFT) & (OCSEQ - 1);
    if (S.ocseq[k].id == S.oc[t].id) S.ocseq[k].ran++;
    if (S.oc[t].req < 0) return;
    sim_req *r = &S.reqs[S.oc[t].req];
    if (req_of((ug_request *)req) != r)
        violation("request %u: its completion callback cannot read its X-Id", r->id);
    /* bytes_in counts the whole request, a streamed body's framing and trailers too */
    uint64_t whole = r->end - r->start;
    if (info->how == UG_END_ANSWERED && (r->kind != K_SBODY || r->sb_end_answer) &&
        info->bytes_in != whole)
        violation("request %u (%s): completion's bytes_in %llu, the request has %llu", r->id,
                  kind_name[r->kind], (unsigned long long)info->bytes_in,
                  (unsigned long long)whole);
}

static void oc_register(ug_request *req, sim_req *r, int order) {
    if (S.noc >= MAXOC) return;
    unsigned t = S.noc;
    int rc = ug_req_on_complete(req, oc_cb, (void *)(uintptr_t)t);
    if (rc) {
        violation("ug_req_on_complete: %d", rc);
        return;
    }
    S.noc++;
    S.oc[t].id = ug_req_id(req);
    S.oc[t].req = r ? (int32_t)r->id : -1;
    S.oc[t].order = (uint8_t)order;
    S.oc[t].ran = 0;
    unsigned k = (unsigned)(S.oc[t].id >> UG_ID_SEQ_SHIFT) & (OCSEQ - 1);
    if (S.ocseq[k].id != S.oc[t].id) {
        S.ocseq[k].id = S.oc[t].id;
        S.ocseq[k].reg = S.ocseq[k].ran = 0;
    }
    S.ocseq[k].reg++;
}

/* A middleware (1 a, 2 b, 3 /ks/'s) is given the request: in chain order, once each. */
static sim_req *mw_enter(ug_request *req, int stage, ug_chain_pos next) {
    sim_req *r = req_of(req);
    if (next.request_id != ug_req_id(req))
        violation("middleware %d: its position names request %llx, not %llx", stage,
                  (unsigned long long)next.request_id, (unsigned long long)ug_req_id(req));
    if (!r) return NULL;
    if (r->mw_stage != stage_before(stage, r->kind == K_SBODY))
        violation("request %u: middleware %d runs after stage %u", r->id, stage, r->mw_stage);
    r->mw_stage = (uint8_t)stage;
    return r;
}

/* Whether middleware stage defers request r (a hash: no draw from the world's PRNG, so that
 * runs with the middlewares on differ from those without only where one defers). */
static uint32_t mw_hash(const sim_req *r, int stage) {
    uint32_t h = (r->id + 1) * 2654435761u ^ S.mw_salt ^ (uint32_t)stage * 0x9e3779b9u;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    return h ^ (h >> 12);
}

static void mw_pass(ug_request *req, sim_req *r, ug_chain_pos next, int stage) {
    if (r && r->mw_held) trace("request %u: middleware %d passes it on", r->id, stage);
    if (r) r->mw_held = 0;
    int rc = ug_next(req, next);
    if (rc) violation("middleware %d: ug_next: %d", stage, rc);
}

static void mw_on_cancel(ug_request *req, ug_cancel_reason why, void *user) {
    (void)req;
    sim_req *r = user;
    S.cancels_seen++;
    S.res->cancels++;
    trace("request %u: cancelled while middleware %u holds it, reason %d", r->id, r->mw_held,
          (int)why);
    if (!r->mw_held) violation("request %u: a middleware's cancel callback, not held", r->id);
    if (r->cancelled) violation("request %u: cancel callback fired twice", r->id);
    if (why == UG_CANCEL_TIMEOUT) {
        S.timeout_cancels++;
        if (!S.cfg.handler_timeout_ms) violation("request %u: handler timeout while off", r->id);
        r->mw_timed_out = 1;
    } else {
        S.conns[r->conn].lossy = 1;
    }
    if (why == UG_CANCEL_DEADLINE && !S.shutdown_asked && !S.wait_failed && !S.hang)
        violation("request %u: DEADLINE cancel without a shutdown", r->id);
    if (why == UG_CANCEL_SERVER_FREE && (S.clean || S.wait_failed))
        violation("request %u: still live when the run ended (SERVER_FREE)", r->id);
    if (why == UG_CANCEL_BODY) violation("request %u: a body cancel before its handler", r->id);
    r->mw_held = 0;
    r->mw_cancelled = r->cancelled = 1;
    r->cancel_reason = (uint8_t)why;
}

static void mw_a_resume(ug_request *req, void *user) {
    sim_req *r = user;
    if (r->mw_held != 1 || terminal(r))
        violation("request %u: middleware a's timer, held %u", r->id, r->mw_held);
    mw_pass(req, r, r->mw_pos, 1);
}

/* Middleware a: registers a completion callback; defers 1 in 8 to a timer (ug_req_timer),
 * then passes the request on. */
static ug_handler_result mw_a(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    sim_req *r = mw_enter(req, 1, next);
    oc_register(req, r, 0);
    uint32_t h = r ? mw_hash(r, 1) : 1;
    if ((h & 7) == 0) {
        r->mw_pos = next;
        r->mw_held = 1;
        ug_req_on_cancel(req, mw_on_cancel, r);
        if (ug_req_timer(req, 1 + (h >> 8) % 60, mw_a_resume, r) == 0) {
            trace("request %u: middleware a defers", r->id);
            S.res->mw_defers++;
            return UG_LATER;
        }
    }
    mw_pass(req, r, next, 1);
    return UG_DONE;
}

static void mw_b_resume(ug_server *srv, void *user) {
    sim_req *r = &S.reqs[(uintptr_t)user];
    ug_request *req = ug_req_find(srv, r->mw_pos.request_id);
    if (!req) {
        if (r->mw_held) violation("request %u: ug_req_find lost it (middleware b)", r->id);
        return;
    }
    if (r->mw_held != 2) violation("request %u: middleware b's post, held %u", r->id, r->mw_held);
    mw_pass(req, r, r->mw_pos, 2);
}

/* Middleware b: a completion callback and a response field (X-Mw, on the handler's answer);
 * defers 1 in 8 to a post (ug_server_post, then ug_req_find); 1 in 16 it calls ug_next a
 * second time, and 1 in 16 it answers after passing the request on: both must be refused
 * and counted as misuse. */
static ug_handler_result mw_b(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    sim_req *r = mw_enter(req, 2, next);
    oc_register(req, r, 1);
    uint32_t h = r ? mw_hash(r, 2) : 1;
    if (r) {
        int rc = ug_resp_header(req, "X-Mw", "b");
        if (rc && rc != -ENOMEM) violation("request %u: ug_resp_header: %d", r->id, rc);
        r->mw_hdr = rc == 0;
    }
    if ((h & 7) == 0) {
        r->mw_pos = next;
        r->mw_held = 2;
        ug_req_on_cancel(req, mw_on_cancel, r);
        if (ug_server_post(S.srv, mw_b_resume, (void *)(uintptr_t)r->id) == 0) {
            trace("request %u: middleware b defers", r->id);
            S.res->mw_defers++;
            return UG_LATER;
        }
    }
    mw_pass(req, r, next, 2);
    if ((h & 15) == 8) {
        uint64_t m0 = misuse_now();
        int rc = ug_next(req, next);
        uint64_t m = misuse_now() - m0;
        if ((rc == -EALREADY) != (m == 1) || (rc != -EALREADY && rc != -ESTALE))
            violation("a second ug_next: %d, misuse counted %llu", rc, (unsigned long long)m);
        S.misuse_expected += m;
    } else if ((h & 15) == 9) {
        /* an answer from inside its call after passing the request on: refused, and misuse
         * (also when the request ended meanwhile, cancelled for want of memory say) */
        uint64_t m0 = misuse_now();
        int rc = ug_resp_send(req, 200, NULL, "mw", 2);
        uint64_t m = misuse_now() - m0;
        if (rc == 0 || m != 1)
            violation("request %u: middleware b's answer after ug_next: %d, misuse counted %llu",
                      r->id, rc, (unsigned long long)m);
        S.misuse_expected += m;
    }
    return UG_DONE;
}

/* /ks/'s own middleware: after the global ones, before the handler. */
static ug_handler_result mw_route(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    sim_req *r = mw_enter(req, 3, next);
    if (r && r->kind != K_SBODY) violation("request %u: /ks/'s middleware runs for it", r->id);
    mw_pass(req, r, next, 3);
    return UG_DONE;
}

static void release_hold(ug_server *srv, void *user) {
    (void)user;
    int rc = ug_server_release(srv);
    trace("hold released: %d", rc);
    S.holds_posted--;
    S.holds_released++;
}

static void on_shutdown(ug_server *srv, ug_gate_state st, void *user) {
    (void)user;
    trace("shutdown hook: state %d", (int)st);
    if (st == UG_GATE_DRAINING && S.hook_hold && ug_server_hold(srv) == 0) S.holds_taken++;
}

/* ---------------------------------------------------------------- the world ---- */

static int live(const sim_conn *c) {
    return !c->closed && !c->reset && c->fd >= 0;
}

static int has_send(const sim_conn *c) {
    return live(c) && c->send_armed;
}

static int has_recv(const sim_conn *c) {
    return live(c) && c->recv_armed;
}

/* The (a % n)-th of the n connections that want this kind of event (any live one if none
 * does). */
static sim_conn *pick_if(uint8_t a, int (*want)(const sim_conn *)) {
    unsigned n = 0;
    for (unsigned i = 0; i < S.nconns; i++) n += want(&S.conns[i]);
    if (!n && want != live) return pick_if(a, live);
    if (!n) return NULL;
    unsigned k = a % n;
    for (unsigned i = 0; i < S.nconns; i++)
        if (want(&S.conns[i]) && k-- == 0) return &S.conns[i];
    return NULL;
}

static sim_conn *pick(uint8_t a) {
    return pick_if(a, live);
}

static void do_shutdown(uint8_t a) {
    static const uint32_t delays[4] = {0, 0, 50, 500};
    static const uint32_t timeouts[8] = {0, 10, 100, 500, 1000, 2000, 5000, 30000};
    ug_shutdown_opts o = {0};
    if ((a & 7) == 0) {
        o.immediate = 1;
        mark_all_lossy();
    } else {
        o.drain_delay_ms = delays[(a >> 3) & 3];
        o.drain_timeout_ms = timeouts[(a >> 5) & 7];
    }
    S.shutdown_asked = 1;
    int rc = ug_server_shutdown(S.srv, &o);
    trace("shutdown %s (delay %u, timeout %u): %d", o.immediate ? "immediate" : "graceful",
          o.drain_delay_ms, o.drain_timeout_ms, rc);
}

static void post_some(uint8_t a) {
    if ((a & 15) == 15 && S.holds_taken > S.holds_released + S.holds_posted) {
        if (ug_server_post(S.srv, release_hold, NULL) == 0) S.holds_posted++;
        return;
    }
    unsigned n = 0;
    for (unsigned i = 0; i < S.nreqs; i++) n += S.reqs[i].post_pending && !terminal(&S.reqs[i]);
    if (!n) return;
    unsigned k = a % n;
    for (unsigned i = 0; i < S.nreqs; i++) {
        sim_req *r = &S.reqs[i];
        if (!r->post_pending || terminal(r) || k-- != 0) continue;
        if (ug_server_post(S.srv, post_answer, (void *)(uintptr_t)r->id) == 0) r->post_pending = 0;
        trace("request %u: the world posts its answer", r->id);
        return;
    }
}

static size_t data_len(uint8_t n) {
    switch (n & 3) {
    case 0:
        return 1 + ((n >> 2) & 7);
    case 1:
        return 1 + ((n >> 2) & 63);
    case 2:
        return (size_t)S.bufsize * (1 + ((n >> 2) & 3));
    default:
        return SIZE_MAX;
    }
}

/* Opcode bytes map to events by weight: of 256 values, this many name each event. */
static const uint8_t weights[SIM_E_COUNT] = {
    [SIM_E_ACCEPT] = 31,     [SIM_E_REQ] = 25,     [SIM_E_DATA] = 40,    [SIM_E_SEND] = 30,
    [SIM_E_EOF] = 6,         [SIM_E_RESET] = 3,    [SIM_E_ENOBUFS] = 4,  [SIM_E_ACCEPT_ERR] = 3,
    [SIM_E_FAIL_SUBMIT] = 4, [SIM_E_KERNEL] = 30,  [SIM_E_SHUTDOWN] = 2, [SIM_E_ALLOC] = 4,
    [SIM_E_POST] = 14,       [SIM_E_PIPELINE] = 2, [SIM_E_RAW] = 3,      [SIM_E_DATA2] = 30,
    [SIM_E_SEND2] = 23,      [SIM_E_BACKLOG] = 2,
};

static int op_of(uint8_t byte) {
    unsigned acc = 0;
    for (int i = 0; i < SIM_E_COUNT; i++) {
        acc += weights[i];
        if (byte < acc) return i;
    }
    return SIM_E_DATA;
}

uint8_t sim_op_byte(int ev) {
    unsigned acc = 0;
    for (int i = 0; i < ev && i < SIM_E_COUNT; i++) acc += weights[i];
    return (uint8_t)acc;
}

static void event(uint8_t byte) {
    sim_conn *c;
    uint8_t a, b;
    switch (op_of(byte)) {
    case SIM_E_ACCEPT:
        accept_one((sc_u8() & 7) == 0);
        break;
    case SIM_E_REQ: {
        c = pick(sc_u8());
        uint8_t r0 = sc_u8(), r1 = sc_u8(), r2 = sc_u8();
        if (c) add_request(c, r0, r1, r2);
        break;
    }
    case SIM_E_DATA:
    case SIM_E_DATA2:
        c = pick_if(sc_u8(), has_recv);
        a = sc_u8();
        if (!c) break;
        if (!pending(c) && !c->eof) add_request(c, (uint8_t)rng(), (uint8_t)rng(), (uint8_t)rng());
        if (c->shut_rd)
            recv_final(c, 0);
        else
            recv_data(c, data_len(a), (a >> 5) == 7);
        break;
    case SIM_E_SEND:
    case SIM_E_SEND2:
        c = pick_if(sc_u8(), has_send);
        a = sc_u8();
        if (!c || !c->send_armed) break;
        if ((a & 7) < 4 || c->send_len < 2) {
            send_done(c, (int32_t)c->send_len);
        } else if ((a & 7) < 6) {
            send_done(c, (int32_t)(1 + (a >> 3) % (c->send_len - 1)));
        } else {
            c->reset = 1;
            c->lossy = 1;
            send_done(c, (a & 7) == 6 ? -EPIPE : -ECONNRESET);
        }
        break;
    case SIM_E_EOF:
        c = pick(sc_u8());
        a = sc_u8();
        if (!c) break;
        c->eof = 1;
        if (a & 1) c->out.len = c->delivered;
        trace("conn %d: client EOF", idx_of(c));
        if (!pending(c)) recv_final(c, 0);
        break;
    case SIM_E_RESET:
        c = pick(sc_u8());
        if (!c) break;
        trace("conn %d: client reset", idx_of(c));
        c->reset = 1;
        c->lossy = 1;
        recv_final(c, -ECONNRESET);
        send_done(c, -ECONNRESET);
        break;
    case SIM_E_ENOBUFS:
        c = pick(sc_u8());
        if (c) recv_final(c, -ENOBUFS);
        break;
    case SIM_E_ACCEPT_ERR: {
        static const int errs[5] = {EMFILE, ENFILE, ENOMEM, ENOBUFS, ECONNABORTED};
        accept_end(-errs[sc_u8() % 5]);
        break;
    }
    case SIM_E_FAIL_SUBMIT:
        a = sc_u8();
        b = sc_u8();
        if (S.faults_now && (S.submit_rate || S.alloc_rate || S.o.faults > 0)) {
            int k = a % SK_COUNT;
            if (k == SK_WAIT && (b & 0x1e)) k = SK_RECV; /* a failing loop: now and then */
            S.fail_next[k] = (b & 1) ? -EBUSY : -ENOMEM;
        }
        break;
    case SIM_E_KERNEL:
        kernel_pending(sc_u8() & 1);
        break;
    case SIM_E_SHUTDOWN:
        a = sc_u8();
        if (S.steps >= S.o.min_shutdown_step) do_shutdown(a);
        break;
    case SIM_E_ALLOC:
        a = sc_u8();
        if (S.faults_now && (S.submit_rate || S.alloc_rate || S.o.faults > 0))
            S.alloc_countdown = 1 + (a & 63);
        break;
    case SIM_E_POST:
        post_some(sc_u8());
        break;
    case SIM_E_PIPELINE: {
        c = pick(sc_u8());
        a = sc_u8();
        unsigned n = 1 + (a % 64) * 4;
        /* [6]: behind a deferred request (input parks); [7]: POSTs with bodies */
        if (c && (a & 0x40)) add_request(c, 3, 0x40, 0);
        for (unsigned i = 0; c && i < n; i++)
            add_request(c, (a & 0x80) ? 0x20 : 0, (uint8_t)(0xe0 | (i & 1)), 0); /* ~64 KB */
        break;
    }
    case SIM_E_BACKLOG:
        backlog_connect();
        break;
    case SIM_E_RAW: {
        c = pick(sc_u8());
        unsigned n = sc_u8() % 48;
        uint8_t raw[48];
        for (unsigned i = 0; i < n; i++) raw[i] = sc_u8();
        if (c && n) add_raw(c, raw, n);
        break;
    }
    default:
        break;
    }
}

static void advance(uint64_t ns) {
    S.now_ns += ns;
}

static void script_step(int64_t timeout_ns) {
    uint8_t s = sc_u8();
    switch ((s >> 2) & 15) {
    case 10:
    case 11:
        advance(1000000);
        break;
    case 12:
        advance((uint64_t)rnd(10) * 1000000);
        break;
    case 13:
        advance((uint64_t)rnd(100) * 1000000);
        break;
    case 14:
        advance((uint64_t)rnd(3000) * 1000000);
        break;
    case 15:
        if (timeout_ns > 0) advance((uint64_t)timeout_ns);
        break;
    default:
        break;
    }
    fire_timers();
    unsigned nev = (s & 0xc3) == 0xc3 ? 0 : 1 + (s & 3);
    S.quiet_step = nev == 0;
    for (unsigned i = 0; i < nev && sc_left(); i++) event(sc_u8());
}

static void hang(const char *why) {
    if (S.hang) return;
    S.hang = 1;
    ug_server *srv = S.srv;
    if ((S.o.waive & SIM_WAIVE_TIMER_ENOMEM) && S.timer_growth_failed) {
        trace("hang after a failed timer start (waived): %s", why);
        S.hang_waived = 1;
    } else {
        violation("hang: %s (gate %d, %u conn(s) open, %u hold(s), listener state %d, fd %d, "
                  "%u timer(s), %u step(s) and %llu ms since the script ended)",
                  why, (int)ug_server_state(srv), srv->loops[0]->conns_open,
                  atomic_load(&srv->gate.holds), srv->listener.state, srv->listener.fd,
                  srv->loops[0]->timers.n, S.wind_steps,
                  (unsigned long long)((S.now_ns - S.wind_t0) / 1000000u));
    }
    ug_shutdown_opts o = {.immediate = 1};
    ug_server_shutdown(srv, &o);
}

static void wind_begin(void) {
    S.wind = 1;
    S.wind_t0 = S.now_ns;
    S.faults_now = 0;
    memset(S.fail_next, 0, sizeof S.fail_next);
    S.alloc_countdown = 0;
    trace("script over: winding down");
    ug_shutdown_opts o = {0};
    o.drain_delay_ms = rnd(3) == 0 ? 200 : 0;
    o.drain_timeout_ms = 2000 + rnd(8000);
    S.shutdown_asked = 1;
    ug_server_shutdown(S.srv, &o);
}

/* The well-behaved world: complete what is cancelled or in flight, deliver what the clients
 * have written, answer deferred requests, give holds back, and close clients that are done
 * (force: every client still there). Returns non-zero if it did anything. */
static int wind_step(int force) {
    unsigned before = S.nbatch;
    int did = 0;
    kernel_pending(1);
    for (unsigned i = 0; i < S.nconns; i++) {
        sim_conn *c = &S.conns[i];
        if (c->closed || c->reset) continue;
        if (c->send_armed) send_done(c, (int32_t)c->send_len);
        if (pending(c) && S.wind_steps > 600) { /* a client that gives up on the rest */
            trace("conn %d: the client drops %zu unsent bytes", idx_of(c), pending(c));
            c->out.len = c->delivered;
        }
        if (c->recv_armed && pending(c) && !c->shut_rd) {
            recv_data(c, (size_t)S.bufsize * 2, 0);
            c->idle = 0;
            continue;
        }
        if (c->eof || pending(c)) continue;
        int done = 1;
        for (unsigned k = 0; k < c->nrq; k++) {
            sim_req *r = &S.reqs[c->rq[k]];
            if (!r->dispatched || (r->has_cb && !terminal(r))) done = 0;
        }
        if (force || c->fin || (done && ++c->idle > 3) || ++c->idle > 40) {
            trace("conn %d: client closes (wind-down)", idx_of(c));
            c->eof = 1;
            recv_final(c, 0);
            did = 1;
        }
    }
    return did || S.nbatch != before;
}

/* Answer what waits for the world's post, give holds back. Returns non-zero if it did. */
static int wind_posts(void) {
    int did = 0;
    for (unsigned i = 0; i < S.nreqs; i++) {
        sim_req *r = &S.reqs[i];
        if (r->post_pending && !terminal(r) &&
            ug_server_post(S.srv, post_answer, (void *)(uintptr_t)r->id) == 0) {
            r->post_pending = 0;
            did = 1;
        }
    }
    if (S.holds_taken > S.holds_released + S.holds_posted &&
        ug_server_post(S.srv, release_hold, NULL) == 0) {
        S.holds_posted++;
        did = 1;
    }
    return did;
}

/* Nothing happens: time passes until the core's deadline or a backend timer. */
static int idle_jump(int64_t timeout_ns) {
    uint64_t t = UINT64_MAX;
    if (timeout_ns > 0) t = S.now_ns + (uint64_t)timeout_ns;
    for (int i = 0; i < MAXT; i++)
        if (S.timers[i].armed && S.timers[i].deadline < t) t = S.timers[i].deadline;
    if (t == UINT64_MAX) return 0;
    if (t > S.now_ns) S.now_ns = t;
    fire_timers();
    return 1;
}

/* What the core did since the last wait: closes, shutdowns, sends modified in flight. */
static void observe(void) {
    if (S.srv->loops[0]->forced &&
        !S.forced_seen) { /* before closes are noticed: those were forced */
        S.forced_seen = 1;
        mark_all_lossy();
    }
    struct pollfd pf[2 * MAXC];
    int map[2 * MAXC];
    unsigned n = 0;
    for (unsigned i = 0; i < S.nconns; i++) {
        sim_conn *c = &S.conns[i];
        if (c->backlog) check_closed(c); /* its number may be reused: compare the inode */
        if (c->closed || c->fd < 0) continue;
        pf[n] = (struct pollfd){.fd = c->fd, .events = POLLRDHUP};
        map[n++] = (int)i;
        pf[n] = (struct pollfd){.fd = c->peer, .events = POLLRDHUP};
        map[n++] = (int)i;
    }
    if (n && poll(pf, n, 0) < 0) n = 0;
    for (unsigned k = 0; k < n; k += 2) {
        sim_conn *c = &S.conns[map[k]];
        if (pf[k].revents & POLLNVAL) {
            check_closed(c);
            continue;
        }
        if ((pf[k].revents & POLLRDHUP) && !c->shut_rd) {
            c->shut_rd = 1;
            trace("conn %d: the core shut its read side", idx_of(c));
        }
        if ((pf[k + 1].revents & (POLLRDHUP | POLLHUP)) && !c->fin) {
            c->fin = 1;
            c->fin_at = c->delivered;
            trace("conn %d: the core's FIN", idx_of(c));
        }
        if (c->send_armed) check_send_unchanged(c, "between waits");
    }
    if (!S.listener_closed && !fd_open(S.lfd)) {
        S.listener_closed = 1;
        trace("the core closed the listener");
        if (S.acc_armed || S.acc_fin) violation("listener closed while its accept is outstanding");
    }
}

static void deliver(ug__completion_cb cb, void *ctx) {
    for (unsigned i = 0; i < S.nbatch; i++) {
        bent *e = &S.batch[i];
        if (!(e->c.flags & UG__CF_MORE)) {
            if (e->kind == BK_ACCEPT) S.acc_fin = 0;
            if (e->kind == BK_RECV) {
                S.conns[e->idx].recv_fin = 0;
                S.conns[e->idx].last_final = e->c.res;
            }
            if (e->kind == BK_SEND) S.conns[e->idx].send_fin = 0;
            if (e->kind == BK_TIMER) S.timers[e->idx].fin = 0;
        }
        cb(ctx, &e->c);
    }
    for (unsigned i = 0; i < S.nconns; i++) S.conns[i].dseen = S.conns[i].delivered;
}

static int sim_wait(ug__backend *b, int64_t timeout_ns, uint32_t batch, ug__completion_cb cb,
                    void *ctx) {
    (void)b;
    (void)batch;
    S.steps++;
    if (S.faults_now && S.fail_next[SK_WAIT]) { /* the loop fails: ug_server_run must end */
        S.fail_next[SK_WAIT] = 0;
        S.wait_failed = 1;
        trace("wait fails: -EIO");
        return -EIO;
    }
    int woken = S.woken;
    S.woken = 0;
    S.last_timeout = timeout_ns;
    S.nbatch = 0;
    observe();
    if (S.hang) {
        if (++S.hang_steps > 400) return -ETIMEDOUT; /* make the run end */
        wind_step(1);
        wind_posts();
        idle_jump(timeout_ns);
    } else {
        if (!S.wind) {
            if (sc_left())
                script_step(timeout_ns);
            else
                wind_begin();
        }
        if (S.wind) {
            S.wind_steps++;
            advance(1000000); /* time passes however busy the world is */
            fire_timers();
            int did = wind_step(0);
            if (S.wind_steps % 8 == 3) did |= wind_posts();
            if (S.wind_steps > S.o.wind_steps)
                hang("the run goes on");
            else if (S.now_ns - S.wind_t0 > 900ull * 1000000000u)
                hang("the drain outlives every deadline");
            else if (!did && S.nbatch == 0 && timeout_ns != 0 && !S.woken && !woken &&
                     !wind_posts() && !idle_jump(timeout_ns) && !wind_step(1))
                hang("the core waits for ever with nothing left to happen");
        }
    }
    /* A quiet step of the script: the kernel finishes what it owes, else time passes until
     * the core's next deadline. (A step whose events produced nothing returns at once.) */
    if (S.quiet_step && S.nbatch == 0 && timeout_ns != 0 && !woken && !S.woken && !S.wind) {
        kernel_pending(1);
        if (S.nbatch == 0) idle_jump(timeout_ns);
    }
    S.woken = 0;
    unsigned n = S.nbatch;
    deliver(cb, ctx);
    S.nbatch = 0;
    return (int)n;
}

/* ---------------------------------------------------------------- responses ---- */

typedef struct presp {
    int status;
    int close, keepalive, chunked, xreq_set, retry_after, eof_body, nxmw, xbody_set;
    char xbody[32];
    long clen;
    uint32_t xreq;
    int ndate, nserver;
    sbuf body;
} presp;

static int tchar(int ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* One response from b[0..n): its length, -1 if incomplete, -2 if malformed (err says why).
 * head: the request was HEAD. */
static long parse_resp(const char *b, size_t n, int head, presp *p, char *err, size_t errn) {
#define BAD(...)                                                                                   \
    do {                                                                                           \
        snprintf(err, errn, __VA_ARGS__);                                                          \
        return -2;                                                                                 \
    } while (0)
    p->status = 0;
    p->close = p->keepalive = p->chunked = p->xreq_set = p->retry_after = p->eof_body = 0;
    p->nxmw = p->xbody_set = 0;
    p->clen = -1;
    p->ndate = p->nserver = 0;
    p->body.len = 0;
    static const char pre[] = "HTTP/1.1 ";
    size_t pl = sizeof pre - 1;
    if (memcmp(b, pre, n < pl ? n : pl)) BAD("status line starts %.12s", b);
    const char *end = memchr(b, '\n', n);
    if (!end) return n > 256 ? -2 : -1;
    size_t ll = (size_t)(end - b) + 1;
    if (ll < pl + 6 || b[ll - 2] != '\r') BAD("status line %.*s", (int)(ll < 60 ? ll : 60), b);
    for (int i = 0; i < 3; i++)
        if (b[pl + i] < '0' || b[pl + i] > '9') BAD("status code");
    p->status = (b[pl] - '0') * 100 + (b[pl + 1] - '0') * 10 + (b[pl + 2] - '0');
    if (b[pl + 3] != ' ') BAD("status line");
    const char *reason = ug__http_reason(p->status);
    size_t rl = ll - pl - 4 - 2;
    if (rl != strlen(reason) || memcmp(b + pl + 4, reason, rl))
        BAD("reason phrase of %d: %.*s", p->status, (int)rl, b + pl + 4);
    size_t pos = ll;
    for (;;) {
        if (pos >= n) return -1;
        const char *e = memchr(b + pos, '\n', n - pos);
        if (!e) return n - pos > 200000 ? -2 : -1;
        size_t l = (size_t)(e - (b + pos)) + 1;
        const char *s = b + pos;
        if (l < 2 || s[l - 2] != '\r') BAD("header line without CRLF");
        pos += l;
        if (l == 2) break;
        size_t k = 0;
        while (k < l - 2 && tchar((unsigned char)s[k])) k++;
        if (!k || s[k] != ':' || s[k + 1] != ' ')
            BAD("header line %.*s", (int)(l < 60 ? l : 60), s);
        const char *v = s + k + 2;
        size_t vl = l - 2 - k - 2;
        for (size_t i = 0; i < vl; i++) {
            unsigned char ch = (unsigned char)v[i];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) BAD("control byte in a header value");
        }
#define IS(name) (k == sizeof(name) - 1 && !strncasecmp(s, name, k))
        if (IS("Content-Length")) {
            if (p->clen >= 0) BAD("two Content-Length");
            if (!vl || vl > 12) BAD("Content-Length value");
            p->clen = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9') BAD("Content-Length value");
                p->clen = p->clen * 10 + (v[i] - '0');
            }
        } else if (IS("Transfer-Encoding")) {
            if (p->chunked || vl != 7 || strncmp(v, "chunked", 7)) BAD("Transfer-Encoding");
            p->chunked = 1;
        } else if (IS("Connection")) {
            if (p->close || p->keepalive) BAD("two Connection fields");
            if (vl == 5 && !strncmp(v, "close", 5))
                p->close = 1;
            else if (vl == 10 && !strncmp(v, "keep-alive", 10))
                p->keepalive = 1;
            else
                BAD("Connection: %.*s", (int)vl, v);
        } else if (IS("X-Req")) {
            if (p->xreq_set) BAD("two X-Req");
            p->xreq_set = 1;
            p->xreq = (uint32_t)strtoul(v, NULL, 10);
        } else if (IS("Retry-After")) {
            p->retry_after = 1;
        } else if (IS("X-Mw")) {
            p->nxmw++;
        } else if (IS("X-Body")) {
            if (p->xbody_set++) BAD("two X-Body");
            snprintf(p->xbody, sizeof p->xbody, "%.*s", (int)(vl < 31 ? vl : 31), v);
        } else if (IS("Date")) {
            p->ndate++;
        } else if (IS("Server")) {
            p->nserver++;
        }
#undef IS
    }
    if (p->clen >= 0 && p->chunked) BAD("Content-Length and chunked");
    if (p->status / 100 == 1) {
        if (p->clen >= 0 || p->chunked) BAD("framing on a 1xx");
        return (long)pos;
    }
    if (p->status == 204 && (p->clen >= 0 || p->chunked)) BAD("framing on a 204");
    if (head || p->status == 204 || p->status == 304) return (long)pos;
    if (p->chunked) {
        for (;;) {
            const char *e = pos < n ? memchr(b + pos, '\n', n - pos) : NULL;
            if (!e) return -1;
            size_t l = (size_t)(e - (b + pos)) + 1;
            if (l < 3 || b[pos + l - 2] != '\r') BAD("chunk size line");
            size_t sz = 0;
            for (size_t i = 0; i < l - 2; i++) {
                char ch = b[pos + i];
                int d = ch >= '0' && ch <= '9'   ? ch - '0'
                        : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                                 : -1;
                if (d < 0 || i > 7) BAD("chunk size %.*s", (int)(l - 2), b + pos);
                sz = sz * 16 + (size_t)d;
            }
            pos += l;
            if (n - pos < sz + 2) return -1;
            if (b[pos + sz] != '\r' || b[pos + sz + 1] != '\n')
                BAD("chunk data not followed by CRLF");
            if (sz == 0) return (long)(pos + 2);
            sb_add(&p->body, b + pos, sz);
            pos += sz + 2;
        }
    }
    if (p->clen >= 0) {
        if (n - pos < (size_t)p->clen) return -1;
        sb_add(&p->body, b + pos, (size_t)p->clen);
        return (long)(pos + (size_t)p->clen);
    }
    if (!p->close) BAD("a body without framing on a connection that stays open");
    sb_add(&p->body, b + pos, n - pos); /* HTTP/1.0 stream: until the close */
    p->eof_body = 1;
    return (long)n;
#undef BAD
}

static size_t dseen_at(const sim_conn *c, size_t pos) {
    size_t d = 0;
    for (unsigned i = 0; i < c->nsends && c->sends[i].wire_start <= pos; i++) d = c->sends[i].dseen;
    return d;
}

static int deferred_kind(int k) {
    return k == K_TIMER || k == K_POST || k == K_POST_SELF || k == K_STREAM_LATER ||
           k == K_FORGET_LATER || k == K_SBODY;
}

static int handler_kind(int k) {
    return k <= K_TWICE || k == K_SBODY;
}

static void check_match(sim_conn *c, sim_req *r, presp *p, size_t pos) {
    int ci = idx_of(c);
    int st = p->status;
    int nobody = r->head || st == 204 || st == 304;
    if (c->delivered <= r->start)
        violation("conn %d: a response (%d) to request %u, of which nothing was sent", ci, st,
                  r->id);
    if (p->xreq_set) {
        if (p->xreq != r->id) {
            violation("conn %d: response for request %u where request %u's was due (order)", ci,
                      p->xreq, r->id);
            return;
        }
        if (st == 503 && r->timed_out && p->body.len == 20 &&
            !memcmp(p->body.p, "Service Unavailable\n", 20)) {
            violation("conn %d: the server's 503 for request %u carries the handler's fields", ci,
                      r->id);
            return;
        }
        if (st != r->status) {
            violation("conn %d: request %u answered %d, the handler sent %u", ci, r->id, st,
                      r->status);
            return;
        }
        /* A body delimited by the close is cut wherever the connection broke. */
        int cut_ok = p->eof_body && p->body.len < r->resp_len &&
                     (c->lossy || (r->truncated_ok && (r->cancelled || r->gave_up)));
        if (st == r->status && !nobody &&
            ((p->body.len != r->resp_len && !cut_ok) ||
             !resp_matches(r->id, p->body.p, p->body.len)))
            violation("conn %d: request %u's body: %zu bytes, %u expected or differing", ci, r->id,
                      p->body.len, r->resp_len);
        if (st == r->status && r->head && r->kind != K_STREAM && r->kind != K_STREAM_LATER &&
            st != 204 && st != 304 && p->clen != (long)r->resp_len)
            violation("conn %d: HEAD request %u: Content-Length %ld, %u expected", ci, r->id,
                      p->clen, r->resp_len);
        if (r->mw_hdr && p->nxmw != 1)
            violation("conn %d: request %u: %d X-Mw fields (middleware b set one)", ci, r->id,
                      p->nxmw);
        if (r->kind == K_SBODY) {
            char want[32];
            snprintf(want, sizeof want, "%u-%08x", r->body_len, r->sb_hash);
            if (r->sb_end_answer && r->sb_xbody_ok && (!p->xbody_set || strcmp(p->xbody, want)))
                violation("conn %d: request %u: X-Body %s, %s expected", ci, r->id,
                          p->xbody_set ? p->xbody : "absent", want);
            if (r->sb_open_answer && !p->close)
                violation("conn %d: request %u answered before its body's end: no close", ci,
                          r->id);
        }
    } else {
        int ok = 0;
        int disp = r->dispatched;
        switch (st) {
        case 404:
            ok = r->kind == K_NOTFOUND;
            break;
        case 405:
            ok = r->kind == K_METHOD;
            break;
        case 503:
            if (r->mw_timed_out) /* held by a middleware */
                ok = 1;
            else if (!disp) /* shed: Retry-After, unless memory ran out for it; with global
                               middlewares every request counts, the core's 404 and 405 too */
                ok = (handler_kind(r->kind) || S.mw_on) && (p->retry_after || c->lossy);
            else
                ok = disp && deferred_kind(r->kind) && S.cfg.handler_timeout_ms &&
                     (r->timed_out || !r->has_cb);
            break;
        case 500:
            ok = disp && (r->kind == K_FORGET_DONE || r->answer_failed || r->gave_up);
            break;
        case 400:
            ok = (r->errs & E400) != 0;
            break;
        case 413:
            ok = (r->errs & E413) != 0;
            break;
        case 414:
            ok = (r->errs & E414) != 0;
            break;
        case 431:
            ok = (r->errs & E431) != 0;
            break;
        case 408:
            if (disp && r->sb_body_to) { /* a streamed body's gap: not all of it had come */
                if (dseen_at(c, pos) >= r->end)
                    violation("conn %d: 408 (body timeout) for request %u, all of whose %zu "
                              "bytes had arrived",
                              ci, r->id, r->end - r->start);
                ok = 1;
                break;
            }
            ok = !disp && dseen_at(c, pos) < r->end;
            if (!ok && !disp && (S.o.waive & SIM_WAIVE_408_COMPLETE)) ok = 1;
            if (!ok && !disp) {
                violation("conn %d: 408 for request %u, all %zu bytes of which had arrived", ci,
                          r->id, r->end - r->start);
                return;
            }
            break;
        default:
            break;
        }
        if (!ok && r->xreq_missing && st == r->status) ok = 1;
        if (!ok) {
            violation("conn %d: request %u (%s%s) answered %d by the server", ci, r->id,
                      kind_name[r->kind], disp ? ", dispatched" : "", st);
            return;
        }
        if (!nobody && st != r->status && st != 408) {
            const char *reason = ug__http_reason(st);
            size_t rl = strlen(reason);
            if (p->body.len != rl + 1 || memcmp(p->body.p, reason, rl))
                violation("conn %d: request %u: the server's %d has body %.*s", ci, r->id, st,
                          (int)(p->body.len < 40 ? p->body.len : 40), p->body.p);
        }
    }
    if (r->want_close && !p->close)
        violation("conn %d: request %u asked to close; the response keeps the connection", ci,
                  r->id);
    if (!r->minor && !r->want_close && !p->close && !p->keepalive)
        violation("conn %d: HTTP/1.0 keep-alive request %u: no Connection: keep-alive", ci, r->id);
    if (p->ndate != 1) violation("conn %d: request %u: %d Date fields", ci, r->id, p->ndate);
    if (p->nserver != (S.cfg.server_name ? 1 : 0))
        violation("conn %d: request %u: %d Server fields", ci, r->id, p->nserver);
}

static void check_conn(sim_conn *c) {
    int ci = idx_of(c);
    const char *w = c->wire.p;
    size_t len = c->wire.len, pos = 0;
    unsigned ri = 0;
    int closed_resp = 0, lenient = 0, conts = 0;
    presp p = {0};
    char err[160];
    while (pos < len) {
        if (closed_resp) {
            violation("conn %d: %zu bytes after a Connection: close response", ci, len - pos);
            break;
        }
        sim_req *r = ri < c->nrq ? &S.reqs[c->rq[ri]] : NULL;
        if (r && r->kind == K_RAW) lenient = 1;
        int head = r && r->head && !lenient;
        if (head && len - pos > 12 && !memcmp(w + pos + 9, "408", 3)) head = 0;
        long n = parse_resp(w + pos, len - pos, head, &p, err, sizeof err);
        if (n == -1) {
            if (!c->lossy && !lenient && !(r && r->truncated_ok && (r->cancelled || r->gave_up)))
                violation("conn %d: response cut after %zu bytes (request %u)", ci, len - pos,
                          r ? r->id : 0);
            break;
        }
        if (n == -2) {
            if (!lenient) violation("conn %d: malformed response at %zu: %s", ci, pos, err);
            break;
        }
        if (head && p.clen > 0 && p.status >= 400 && !p.xreq_set) {
            const char *reason = ug__http_reason(p.status);
            size_t rl = strlen(reason), at = pos + (size_t)n;
            if ((size_t)p.clen == rl + 1 && len - at >= rl + 1 && !memcmp(w + at, reason, rl) &&
                w[at + rl] == '\n') {
                if (!(S.o.waive & SIM_WAIVE_HEAD_BODY))
                    violation("conn %d: the %d refusing HEAD request %u carries a body", ci,
                              p.status, r->id);
                n += (long)rl + 1;
            }
        }
        if (p.status / 100 == 1) {
            /* A streamed body's client is told to send it only once it is read. */
            if (!lenient && (p.status != 100 || !r || !r->expect || conts++ ||
                             (r->kind == K_SBODY && !r->sb_cont)))
                violation("conn %d: unexpected %d (request %u)", ci, p.status, r ? r->id : 0);
            pos += (size_t)n;
            continue;
        }
        if (!r) {
            violation("conn %d: a response (%d) without a request", ci, p.status);
            break;
        }
        if (!lenient) check_match(c, r, &p, pos);
        if (!lenient && r->kind == K_SBODY && r->sb_cont && !conts && !c->lossy)
            violation("conn %d: request %u's body was read without a 100 Continue", ci, r->id);
        r->responded = 1;
        S.res->responses++;
        if (p.status < 600) S.wire_counted++;
        if (p.close) closed_resp = 1;
        pos += (size_t)n;
        ri++;
        conts = 0;
    }
    sb_free(&p.body);
    if (c->lossy || closed_resp || lenient || S.hang) return;
    for (; ri < c->nrq; ri++) {
        sim_req *r = &S.reqs[c->rq[ri]];
        if (r->kind == K_RAW || c->delivered < r->end) break; /* not all sent: none owed */
        if (c->fin && r->start >= c->fin_at) break;           /* raced our FIN */
        /* a timeout is answered (503, 408), unless a response had started (it is cut) */
        if (r->cancelled && (r->cancel_reason != UG_CANCEL_TIMEOUT || r->sb_streaming)) break;
        if (r->dispatched && deferred_kind(r->kind) && !r->has_cb && !r->answered) break;
        violation("conn %d: request %u (%s) arrived and was never answered", ci, r->id,
                  kind_name[r->kind]);
        break;
    }
}

/* ---------------------------------------------------------------- the run ---- */

static void sim_log(void *user, ug_log_level lvl, const char *msg) {
    (void)user;
    if (strstr(msg, "stale completion")) violation("core: %s", msg);
    if (S.o.trace) fprintf(stderr, "sim[%u] log %d: %s\n", S.steps, (int)lvl, msg);
}

static void configure(const uint8_t h[8]) {
    ug_config *cfg = &S.cfg;
    ug_config_init(cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 0;
    cfg->backlog = 16;
    cfg->log = sim_log;
    static const uint32_t to[4][6] = {
        /* idle, header, body, write, handler, linger */
        {60000, 10000, 30000, 30000, 30000, 1000},
        {3000, 800, 800, 1500, 1200, 300},
        {200, 50, 50, 80, 120, 20},
        {0, 0, 0, 0, 0, 0},
    };
    const uint32_t *t = to[h[0] & 3];
    cfg->idle_timeout_ms = t[0];
    cfg->read_header_timeout_ms = t[1];
    cfg->body_timeout_ms = t[2];
    cfg->write_timeout_ms = t[3];
    cfg->handler_timeout_ms = (h[1] & 8) ? 0 : t[4];
    static const uint32_t lingers[4] = {1000, 50, 5000, 0};
    cfg->linger_ms = lingers[(h[1] >> 4) & 3];
    if (h[0] & 4) cfg->max_conns = 4;
    if (h[0] & 8) cfg->max_inflight = 2;
    static const uint32_t bsz[4] = {4096, 512, 64, 16};
    static const uint32_t bn[4] = {64, 16, 4, 2};
    cfg->recv_buffer_size = bsz[(h[0] >> 4) & 3];
    cfg->recv_buffers = bn[h[0] >> 6];
    if (h[1] & 1) {
        cfg->max_header_bytes = 1024;
        cfg->max_headers = 16;
        cfg->max_uri_bytes = 256;
        cfg->max_body_bytes = 4096;
    }
    if (h[1] & 2) cfg->gate_settle_ms = 0;
    if (h[1] & 4) cfg->server_name = NULL;
    if (h[3] & 0x10) cfg->max_output_bytes = 8192;
    S.mw_on = (h[3] >> 5) & 3;
    S.mw_salt = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
    /* /ks/'s limit: streamed bodies up to it must get through the receive buffers in a run */
    S.sb_limit = cfg->recv_buffer_size >= 4096  ? 100000
                 : cfg->recv_buffer_size >= 512 ? 20000
                                                : 2000;
    S.hook_hold = (h[1] & 0x40) != 0;
}

static const unsigned rates[16] = {0, 0, 0, 0, 0, 0, 0, 0, 20, 50, 100, 200, 400, 800, 1600, 3200};

/* Every request the core read ends once: an id is never reported twice. */
static void on_done(const ug_request *req, const ug_completion *info, void *user) {
    (void)req;
    (void)user;
    S.ndone++;
    trace("completion of %llx: how %d, status %u", (unsigned long long)info->request_id,
          (int)info->how, info->status);
    if (!info->request_id) {
        if (info->how != UG_END_REJECTED && info->how != UG_END_CANCELLED)
            violation("completion without an id: how %d", (int)info->how);
        return;
    }
    for (unsigned i = 0; i < S.ndone_ids; i++)
        if (S.done_ids[i] == info->request_id)
            violation("request %llx completed twice (how %d)", (unsigned long long)info->request_id,
                      (int)info->how);
    if (S.ndone_ids < MAXR) S.done_ids[S.ndone_ids++] = info->request_id;
    /* the request's own callbacks (ug_req_on_complete) have all run, just before */
    unsigned k = (unsigned)(info->request_id >> UG_ID_SEQ_SHIFT) & (OCSEQ - 1);
    if (S.ocseq[k].id == info->request_id && S.ocseq[k].ran != S.ocseq[k].reg)
        violation("request %llx: the server's hook runs after %u of its %u completion callbacks",
                  (unsigned long long)info->request_id, S.ocseq[k].ran, S.ocseq[k].reg);
}

/* A connection is NEW first, CLOSED last, and nothing after. */
static void on_conn_state(ug_server *srv, const ug_conn_info *info, void *user) {
    (void)srv;
    (void)user;
    unsigned i = 0;
    while (i < S.ncstates && S.cstates[i].id != info->conn_id) i++;
    if (i == S.ncstates) {
        if (info->state != UG_CS_NEW)
            violation("connection %llx: state %d before NEW", (unsigned long long)info->conn_id,
                      info->state);
        if (S.ncstates == sizeof S.cstates / sizeof S.cstates[0]) return;
        S.cstates[S.ncstates++].id = info->conn_id;
    } else if (S.cstates[i].last == UG_CS_CLOSED || info->state == UG_CS_NEW) {
        violation("connection %llx: state %d after %d", (unsigned long long)info->conn_id,
                  info->state, S.cstates[i].last);
    }
    S.cstates[i].last = info->state;
}

static void hook_checks(const ug_stats *st) {
    if (S.ndone != st->requests)
        violation("completion hook: %u calls, %llu requests", S.ndone,
                  (unsigned long long)st->requests);
    for (unsigned i = 0; i < S.ncstates; i++)
        if (S.cstates[i].last != UG_CS_CLOSED)
            violation("connection %llx: never CLOSED", (unsigned long long)S.cstates[i].id);
    const ug__loop *lp = S.srv->loops[0];
    for (int v = 0; v < UG_VIEW_COUNT; v++)
        if (lp->views[v]) violation("%u connection(s) still counted in view %d", lp->views[v], v);
}

static void final_checks(void) {
    ug_server *srv = S.srv;
    ug_stats st;
    ug_server_stats(srv, &st);
    for (unsigned i = 0; i < S.nconns; i++) check_closed(&S.conns[i]);
    unsigned out = 0;
    for (uint32_t i = 0; i < S.nbufs; i++) out += S.bufs[i].out != 0;
    if (out) violation("%u receive buffer(s) never released", out);
    if (S.report.accepted_after_close)
        violation("report.accepted_after_close = %llu",
                  (unsigned long long)S.report.accepted_after_close);
    for (unsigned i = 0; i < S.nreqs; i++) {
        sim_req *r = &S.reqs[i];
        if (r->dispatched && r->has_cb && !terminal(r))
            violation("request %u (%s) neither answered nor cancelled", r->id, kind_name[r->kind]);
        if (r->mw_held)
            violation("request %u (%s) held by middleware %u, neither passed on nor cancelled",
                      r->id, kind_name[r->kind], r->mw_held);
    }
    /* the workload's middlewares misuse nothing but on purpose (a second answer, a second
     * ug_next), and each of those is counted once */
    if (st.middleware_misuse != S.misuse_expected)
        violation("stats: middleware_misuse %llu, %llu caused on purpose",
                  (unsigned long long)st.middleware_misuse, (unsigned long long)S.misuse_expected);
    if (!S.clean) return;
    if (st.timeouts_body < S.body_timeouts)
        violation("stats: timeouts_body %llu < %u body timeout cancels",
                  (unsigned long long)st.timeouts_body, S.body_timeouts);
    if (ug_server_state(srv) != UG_GATE_CLOSED) violation("the run returned before CLOSED");
    if (srv->listener.fd >= 0) violation("the listener is still open");
    if (S.acc_armed || S.acc_fin) violation("the accept is still armed after the run");
    for (unsigned i = 0; i < S.nconns; i++) {
        sim_conn *c = &S.conns[i];
        if (c->backlog && c->before_close) { /* the gate's promise: taken and served, or */
            char b;                          /* at least closed by us, never reset */
            ssize_t n = recv(c->peer, &b, 1, MSG_DONTWAIT);
            if (n < 0 && errno != EAGAIN)
                violation("conn %d: queued before the gate closed, then reset (%s)", (int)i,
                          strerror(errno));
            else if (n < 0)
                violation("conn %d: queued before the gate closed, never taken", (int)i);
        }
        if (c->fd < 0) continue;
        if (!c->closed) violation("conn %d: fd %d still open after the run", (int)i, c->fd);
        if (ops_outstanding(c)) violation("conn %d: operations outstanding after the run", (int)i);
    }
    if (st.conns_accepted < S.res->conns || st.conns_accepted > S.res->conns + S.nbacklog)
        violation("stats: conns_accepted %llu, %u connections accepted and %u queued",
                  (unsigned long long)st.conns_accepted, S.res->conns, S.nbacklog);
    if (st.conns_closed != st.conns_accepted || st.conns_open || st.inflight)
        violation("stats: accepted %llu, closed %llu, open %llu, inflight %llu",
                  (unsigned long long)st.conns_accepted, (unsigned long long)st.conns_closed,
                  (unsigned long long)st.conns_open, (unsigned long long)st.inflight);
    if (st.requests_cancelled != S.cancels_seen && !(S.o.waive & SIM_WAIVE_CANCEL_COUNT))
        violation("stats: requests_cancelled %llu, %u cancel callbacks fired",
                  (unsigned long long)st.requests_cancelled, S.cancels_seen);
    const ug_report *rp = &S.report;
    if (rp->conns_drained + rp->conns_forced != rp->conns_at_close + rp->accepted_at_close)
        violation("report: %llu drained + %llu forced, %llu open at the close + %llu taken then",
                  (unsigned long long)rp->conns_drained, (unsigned long long)rp->conns_forced,
                  (unsigned long long)rp->conns_at_close,
                  (unsigned long long)rp->accepted_at_close);
    if (st.timeouts_handler < S.timeout_cancels)
        violation("stats: timeouts_handler %llu < %u timeout cancels",
                  (unsigned long long)st.timeouts_handler, S.timeout_cancels);
    if (st.requests < S.res->dispatched)
        violation("stats: requests %llu < %u dispatched", (unsigned long long)st.requests,
                  S.res->dispatched);
    uint64_t finals = st.responses[2] + st.responses[3] + st.responses[4] + st.responses[5];
    if (finals < S.wire_counted)
        violation("stats: %llu responses counted, %u on the wire", (unsigned long long)finals,
                  S.wire_counted);
    hook_checks(&st);
}

unsigned sim_run(const uint8_t *script, size_t len, const sim_opts *opts, sim_result *res) {
    memset(&S, 0, sizeof S);
    if (opts)
        S.o = *opts;
    else
        sim_opts_init(&S.o);
    if (!S.o.max_conns) S.o.max_conns = 48;
    if (!S.o.wind_steps) S.o.wind_steps = 4000;
    memset(res, 0, sizeof *res);
    S.res = res;
    S.sc = script;
    S.sc_len = len;
    uint8_t h[8];
    for (int i = 0; i < 8; i++) h[i] = sc_u8();
    S.rng = ((uint64_t)h[4] << 24 | (uint64_t)h[5] << 16 | (uint64_t)h[6] << 8 | h[7]) + 7;
    configure(h);
    S.alloc_rate = rates[h[2] & 15];
    S.submit_rate = rates[h[3] & 15];
    if (S.o.faults == 0) S.alloc_rate = S.submit_rate = 0;
    if (S.o.faults > 0 && !S.alloc_rate && !S.submit_rate) S.alloc_rate = S.submit_rate = 100;
    S.now_ns = 1000ull * 1000000000u;
    S.lfd = -1;
    ug__fault_clock_hook = sim_clock;
    ug__fault_alloc_hook = sim_alloc;
    if ((h[1] & 0x80) && S.o.faults != 0) {
        S.faults_now = 1;
        S.alloc_countdown = 1 + h[2] % 24;
    }
    int rc = ug__server_create_ops(&S.srv, &S.cfg, &sim_ops);
    S.faults_now = 0;
    S.alloc_countdown = 0;
    res->create_rc = rc;
    trace("server created: %d", rc);
    if (rc == 0) {
        if (ug_route(S.srv, NULL, "/k/", UG_ROUTE_PREFIX, h_main, NULL) ||
            ug_route(S.srv, "GET", "/kg/", UG_ROUTE_PREFIX, h_main, NULL) ||
            ug_route(S.srv, "POST", "/post-only", UG_ROUTE_EXACT, h_main, NULL) ||
            ug_route(S.srv, "POST", "/ks/", UG_ROUTE_PREFIX | UG_ROUTE_STREAM_BODY, h_sbody,
                     NULL) ||
            ug_route_body_limit(S.srv, "POST", "/ks/", S.sb_limit) ||
            ((S.mw_on & 1) && ug_use(S.srv, "sim-a", mw_a, NULL)) ||
            ((S.mw_on & 2) && ug_use(S.srv, "sim-b", mw_b, NULL)) ||
            (S.mw_on && ug_route_use(S.srv, "POST", "/ks/", "sim-ks", mw_route, NULL)) ||
            ug_server_on_shutdown(S.srv, on_shutdown, NULL) ||
            ug_server_on_complete(S.srv, on_done, NULL) ||
            ug_server_on_conn_state(S.srv, on_conn_state, NULL))
            violation("setting up routes failed");
        S.lfd = S.srv->listener.fd;
        /* ugate.h: a client that does not read costs at most max_output_bytes, plus the
         * response that crossed it (ours are at most RESP_MAX, plus the head). */
        S.max_send = S.srv->cfg.max_output_bytes + 2u * RESP_MAX + 8192u;
        S.max_alloc_ok = 4 * S.max_send > (4u << 20) ? 4 * S.max_send : (4u << 20);
        S.faults_now = S.alloc_rate || S.submit_rate || S.o.faults > 0;
        S.in_run = 1;
        res->run_rc = ug_server_run(S.srv, &S.report);
        S.in_run = 0;
        S.faults_now = 0;
        trace("run returned %d", res->run_rc);
        S.clean = res->run_rc >= 0 && !S.hang;
        /* The one documented failure: the first accept could not be armed. */
        if (res->run_rc < 0 && !S.hang && !S.wait_failed && !(res->run_rc == -EIO && S.steps == 0))
            violation("ug_server_run: %d", res->run_rc);
        if (S.srv->loops[0]->forced && !S.forced_seen) /* forced in the run's last iteration */
            for (unsigned i = 0; i < S.nconns; i++)
                if (!S.conns[i].closed) S.conns[i].lossy = 1;
        for (unsigned i = 0; i < S.nconns; i++) check_conn(&S.conns[i]);
        final_checks();
        S.after_run = 1;
        S.freeing = 1;
        ug_server_free(S.srv);
        S.freeing = 0;
        /* however the run ended: ug_server_free runs the callbacks of requests still live */
        for (unsigned t = 0; t < S.noc; t++)
            if (S.oc[t].ran != 1)
                violation("request %llx: its completion callback %u ran %u times",
                          (unsigned long long)S.oc[t].id, S.oc[t].order, S.oc[t].ran);
        for (unsigned i = 0; i < S.nconns; i++) { /* whatever the run's end, free closes all */
            sim_conn *c = &S.conns[i];
            if (c->fd >= 0 && !c->closed && (c->backlog ? ino_of(c->fd) == c->ino : fd_open(c->fd)))
                violation("conn %d: fd %d still open after ug_server_free", (int)i, c->fd);
        }
    } else if (rc != -ENOMEM) {
        violation("ug__server_create_ops: %d", rc);
    }
    S.srv = NULL;
    ug__fault_clock_hook = NULL;
    ug__fault_alloc_hook = NULL;
    for (unsigned i = 0; i < S.nconns; i++) {
        sim_conn *c = &S.conns[i];
        if (c->fd >= 0 && !c->closed && (c->backlog ? ino_of(c->fd) == c->ino : fd_open(c->fd)))
            close(c->fd);
        close(c->peer);
        sb_free(&c->out);
        sb_free(&c->wire);
        free(c->rq);
        free(c->sends);
        free(c->send_copy);
    }
    for (uint32_t i = 0; i < MAXBUF; i++) free(S.bufs[i].p);
    res->steps = S.steps;
    return res->violations;
}
