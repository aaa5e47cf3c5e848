/* Internal declarations shared by the core's files. Not installed. */
#ifndef UG_INTERNAL_H
#define UG_INTERNAL_H

#include "backend.h"
#include "fault.h"
#include "http.h"
#include "timer.h"
#include "ugate.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ---- user_data: [63:60] op, [59:32] slot index, [31:0] slot generation ----
 * The generation makes a completion for a slot that was freed and reused impossible to
 * dispatch to the new occupant (nginx's "instance" bit, widened). */
enum ug__op {
    UG_OP_ACCEPT = 1,
    UG_OP_RECV = 2,
    UG_OP_SEND = 3,
    UG_OP_DEADLINE = 4, /* the drain deadline: one timeout SQE */
};
#define UG_UD(op, idx, gen)                                                                        \
    (((uint64_t)(op) << 60) | ((uint64_t)((idx)&0x0fffffffu) << 32) | (uint64_t)(uint32_t)(gen))
#define UG_UD_OP(ud) ((unsigned)((ud) >> 60))
#define UG_UD_IDX(ud) ((uint32_t)(((ud) >> 32) & 0x0fffffffu))
#define UG_UD_GEN(ud) ((uint32_t)(ud))
#define UG_IDX_MAX 0x0fffffffu
#define UG_NONE UINT32_MAX

/* ---- growable byte buffer ---- */
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

/* ---- response heads ---- */
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

/* ---- connection slot: what an idle keep-alive connection costs (kept small) ---- */
enum ug__conn_state {
    UG_CONN_FREE = 0,
    UG_CONN_OPEN,    /* reading / handling / writing */
    UG_CONN_LINGER,  /* our FIN is sent (or about to be); reading and discarding until EOF */
    UG_CONN_CLOSING, /* cancels submitted; waiting for the last completions to close(2) */
};

enum ug__conn_flag {
    UG_CF_RECV_ARMED = 1u << 0, /* a multishot recv is armed (its final CQE not seen) */
    UG_CF_SEND_INFLIGHT = 1u << 1,
    UG_CF_CLOSE_AFTER = 1u << 2, /* close once the queued output is sent */
    UG_CF_RECV_PAUSED = 1u << 3, /* input or output over its bound: the recv is cancelled (or
                                    its cancel is in flight) and re-armed only where the pause
                                    is lifted (ug__conn_flush, begin_linger) */
    UG_CF_DRAIN = 1u << 4,       /* gate is closing: next response says Connection: close */
    UG_CF_DIRTY = 1u << 5,       /* on the server's dirty list */
    UG_CF_ERROR = 1u << 6,       /* ended by an error: counted in conns_reset */
    UG_CF_PEER_EOF = 1u << 7,    /* the client closed its side: answer what is buffered */
    UG_CF_FAILED = 1u << 8,      /* out of memory or SQEs mid-parse: closed as an error once
                                    the parse loop has unwound (conn.c conn_failed) */
};

/* Timeout queues: every connection in a queue has the same timeout, so appending at the
 * tail keeps the queue sorted by deadline: arm, re-arm and disarm are O(1), with no syscall
 * and no heap (haproxy/nginx style). The loop waits until the earliest head. */
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

struct ug_request;

typedef struct ug__conn {
    int fd;
    uint32_t gen;
    uint8_t state; /* ug__conn_state */
    uint8_t tq;    /* ug__tq */
    uint16_t flags;
    uint32_t tq_prev, tq_next; /* slot indices, UG_NONE at the ends */
    uint32_t dirty_next;       /* next on the dirty list */
    uint64_t deadline_ms;
    struct ug_request *ctx; /* NULL while idle: no buffer is held */
} ug__conn;

/* ---- the active context of a busy connection; it is also the ug_request ---- */
enum ug__req_state {
    UG_RS_NONE = 0,  /* no request dispatched (reading, or between requests) */
    UG_RS_HANDLER,   /* inside the handler call */
    UG_RS_DEFERRED,  /* handler returned UG_LATER, no response yet */
    UG_RS_STREAMING, /* ug_resp_start called, not ended */
    UG_RS_ANSWERED,  /* response complete; request bytes not yet consumed */
};

struct ug_request {
    ug_server *srv;
    ug__conn *conn;
    uint64_t id; /* (sequence << 28) | slot index; 0 while no request is dispatched */

    ug__buf in;      /* input; in.p[in_off] is the current request's first byte */
    uint32_t in_off; /* bytes of answered requests not yet compacted away */
    ug__buf parked;  /* input that arrived while a request is live (its views pin 'in') */
    ug__http_req http;
    ug__http_header *headers; /* max_headers entries, allocated with the context */
    uint8_t parsing;          /* http is initialised for the request at in.p[0] */
    uint8_t rstate;           /* ug__req_state */
    uint8_t keep_alive;       /* this request allows the connection to stay open */
    uint8_t continue_sent;
    uint8_t inflight; /* counted in srv->inflight */

    ug__buf out[2]; /* output; out[sending] is in flight, the other takes appends */
    int8_t sending; /* index in flight, or -1 */
    uint32_t sent;  /* bytes of out[sending] already sent */
    struct iovec iov;

    ug__buf resp_hdrs; /* headers added with ug_resp_header before the response starts */
    uint8_t own_hdrs;  /* ug__own_hdr */
    uint8_t head;
    uint8_t chunked_out; /* streaming with chunked framing */
    uint16_t status;

    ug_cancel_fn cancel_fn;
    void *cancel_user;
    ug__timer timer;
    ug_req_timer_fn timer_fn;
    void *timer_user;

    struct ug_request *free_next;
};

/* ---- routes ---- */
typedef struct ug__route {
    char *method; /* NULL: any */
    char *path;
    size_t path_len;
    unsigned flags;
    ug_handler_fn fn;
    void *user;
} ug__route;

typedef struct ug__hook {
    ug_shutdown_hook_fn fn;
    void *user;
} ug__hook;

typedef struct ug__post {
    struct ug__post *next;
    ug_post_fn fn;
    void *user;
} ug__post;

/* ---- the server ---- */
struct ug_server {
    ug_config cfg;
    char *host_copy, *server_name_copy;
    ug__http_limits limits;
    const ug__backend_ops *be_ops;
    ug__backend *be;
    int lfd;
    uint16_t port;

    /* connection slots: reserved address space, touched as used */
    ug__conn *slots;
    uint32_t nslots;     /* capacity (max_conns + headroom for accepts racing a pause) */
    uint32_t slots_used; /* high-water mark: slots [0, slots_used) have been touched */
    uint32_t free_head;  /* free list through tq_next */
    uint32_t conns_open;
    uint32_t inflight; /* requests dispatched and not answered */
    uint32_t dirty_head;

    /* request contexts: a recycler of fixed-size objects */
    struct ug_request *ctx_free;
    uint32_t ctx_free_count;

    ug__route *routes;
    size_t nroutes;
    ug__hook *hooks;
    size_t nhooks;
    uint32_t holds;
    int running;

    /* time */
    uint64_t now_ms;
    int time_stale; /* set before a wait; the first completion after it reads the clock */
    uint64_t now_ns;
    int64_t date_sec;
    char std_hdrs[UG__STD_HDRS_MAX]; /* the Server line, then the Date line (once a second) */
    uint32_t server_line_len;
    uint32_t std_hdrs_len;

    /* timeout queues */
    struct {
        uint32_t head, tail;
        uint32_t timeout_ms;
    } tq[UG_TQ_COUNT];
    ug__timer_heap timers;
    ug__timer accept_retry;

    uint64_t req_seq;

    /* gate */
    _Atomic int gate;            /* ug_gate_state, written by the loop thread only */
    _Atomic int shutdown_req;    /* 0 none, 1 graceful, 2 immediate */
    _Atomic int sd_opts_claimed; /* the first ug_server_shutdown stores the options... */
    _Atomic int sd_opts_ready;   /* ...and then says so; the loop waits for it */
    _Atomic uint32_t sd_delay_ms;
    _Atomic uint32_t sd_timeout_ms;
    int shutdown_seen;    /* loop: 0, 1 graceful, 2 immediate */
    int accept_armed;     /* multishot accept armed (final CQE not yet seen) */
    int accept_cancelled; /* the gate closing cancelled it */
    int accept_paused;    /* at max_conns: cancelled until below the low watermark */
    int deadline_armed;
    int forced;
    ug__timer lame_duck_timer;
    ug__timer settle_timer;      /* listener: handshakes under way finish before the close */
    ug__timer deadline_fallback; /* the drain deadline if the backend refused its timer */
    int accept_cancel_retry;     /* the accept's cancel could not be queued */
    int listener_settling;
    uint64_t t_lame_duck_ms, t_close_ms, t_listener_closed_ms, t_drained_ms;
    ug_report report;

    _Atomic(ug__post *) posts;

    ug_stats stats;
};

/* server.c */
/* ug_server_create with a given backend table (tests drive the core with a mock one). */
int ug__server_create_ops(ug_server **out, const ug_config *cfg, const ug__backend_ops *ops);
void ug__log(ug_server *srv, ug_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ug__mark_dirty(ug_server *srv, ug__conn *c);
/* Put c in queue q with a deadline of now + q's timeout; a no-op if it is already in q. */
void ug__tq_set(ug_server *srv, ug__conn *c, enum ug__tq q);
/* Restart c's deadline in its current queue (the body timeout measures gaps). */
void ug__tq_touch(ug_server *srv, ug__conn *c);
void ug__conn_free_slot(ug_server *srv, ug__conn *c);
/* Pause the accept at max_conns, resume it below the low watermark. */
void ug__gate_check_limit(ug_server *srv);
struct ug_request *ug__ctx_get(ug_server *srv);
void ug__ctx_put(ug_server *srv, struct ug_request *ctx);
void ug__ctx_destroy(struct ug_request *ctx); /* free a context and its buffers */

/* conn.c */
void ug__conn_accepted(ug_server *srv, int fd);
void ug__conn_on_recv(ug_server *srv, ug__conn *c, const ug__completion *cq);
void ug__conn_on_send(ug_server *srv, ug__conn *c, const ug__completion *cq);
void ug__conn_flush(ug_server *srv, ug__conn *c); /* parse pending input, send output */
void ug__conn_timeout(ug_server *srv, ug__conn *c, enum ug__tq q);
void ug__conn_close(ug_server *srv, ug__conn *c, int error);
void ug__conn_abort(ug_server *srv, ug__conn *c, ug_cancel_reason why);
void ug__conn_drain(ug_server *srv, ug__conn *c); /* gate closed: finish and close */
void ug__request_answered(struct ug_request *req);

/* response.c */
void ug__std_hdrs_init(ug_server *srv);
void ug__date_refresh(ug_server *srv, int64_t sec);
int ug__resp_error(struct ug_request *req, int status); /* a canned response, then close */
int ug__resp_continue(struct ug_request *req);

/* sock.c: plain socket syscalls, shared by both backends' users */
int ug__listen(const char *host, uint16_t port, int backlog, uint16_t *bound_port);
int ug__sock_set_nodelay(int fd);
int ug__sock_accept_nb(int lfd); /* accept4 non-blocking: fd, -EAGAIN, or -errno */
int ug__sock_drop_syn(int lfd);  /* attach the SYN-dropping filter used while closing */

#endif
