/* A scripted backend for driving the core (server.c, conn.c, response.c) deterministically.
 *
 * The mock records every operation the core starts (accept, recv, send, cancel, timer,
 * timer_cancel; for send a copy of the bytes) and delivers only the completions the test
 * queues. ug_server_run runs on a thread of its own; the test hands work over with a mutex and
 * a condition variable:
 *
 *   mock_complete()/mock_recv()  queue completions (FIFO; one wait() delivers all queued)
 *   mock_sync()                  returns once the loop has processed everything queued so far
 *                                and is blocked in wait() again (a full loop iteration, with
 *                                posts, timers and flushes, has run since)
 *   mock_hold()/mock_release()   make several completions arrive in one wait() batch
 *
 * Accepted fds are real socketpair() ends, so close(2) in the core is harmless and the test can
 * observe it. When a send completion with res > 0 is delivered, the mock writes those bytes to
 * the fd, so the peer end reads exactly what the core "sent" (mock_wire(0) turns that off).
 *
 * The mock also checks the backend contract and records violations (mock_nerrors()):
 * a second recv or send armed on an fd that already has one, a reserved user_data, a send
 * buffer modified while in flight, a buffer released twice, a backend call from a thread other
 * than the loop's.
 */
#ifndef UG_MOCK_BACKEND_H
#define UG_MOCK_BACKEND_H

#include "core.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum mock_kind {
    MK_ACCEPT = 1,
    MK_RECV,
    MK_SEND,
    MK_CANCEL,
    MK_TIMER,
    MK_TIMER_CANCEL,
};

typedef struct mock_op {
    int kind;
    int fd;               /* accept: the listening fd; recv/send: the connection's; else -1 */
    uint64_t ud;          /* the operation's user_data; cancel/timer_cancel: the target's */
    uint64_t deadline_ns; /* timer */
    char *data;           /* send: a copy of the bytes at submission */
    size_t len;           /* send: their count */
    const char *mem;      /* send: the core's bytes (must stay unchanged until completion) */
    int final_queued;     /* its last completion is queued (by the test or automatically) */
    int finished;         /* its last completion has been delivered */
    int cancelled;        /* a cancel has named its user_data */
} mock_op;

extern const ug__backend_ops mock_backend_ops;

#define MOCK_ACCEPT_UD UG_UD(UG_OP_ACCEPT, 0, 0)
#define MOCK_DEADLINE_UD UG_UD(UG_OP_DEADLINE, 0, 0)

/* Forget every operation, completion and error. Call before creating each server. */
void mock_reset(void);
/* sends: complete each send in full as soon as it is started; cancels: complete every
 * operation named by a cancel (or timer_cancel) with -ECANCELED as soon as it is cancelled. */
void mock_auto(int sends, int cancels);
/* The next wait() call fails with err (a negative errno). */
void mock_fail_wait(int err);
/* The next recv() call fails with err (a negative errno) without arming anything. */
void mock_fail_recv(int err);
/* The next timer() call fails with err (a negative errno) without arming anything. */
void mock_fail_timer(int err);
/* Write the bytes of completed sends to the fd (default on). */
void mock_wire(int on);

/* Create a server on the mock backend (the config's log is pointed at mock_log). */
int mock_server_create(ug_server **srv, ug_config *cfg);
/* Run ug_server_run(srv) on a new thread. */
void mock_run(ug_server *srv);
/* 0: the loop processed everything queued before the call and is idle in wait() again;
 * 1: ug_server_run has returned; -1: timed out (2 s). */
int mock_sync(void);
/* 1 once ug_server_run has returned. */
int mock_done(void);
/* Wait (at most 5 s: exits the program on a hang) for ug_server_run to return; its result. */
int mock_join(ug_report *rep);
/* End the run whatever state it is in: immediate shutdown, complete whatever is cancelled or
 * in flight, join. Returns the run's result. */
int mock_stop(ug_server *srv, ug_report *rep);

void mock_hold(void);
void mock_release(void);
void mock_complete(uint64_t ud, int32_t res, uint32_t flags);
/* A receive completion carrying a provided buffer with these bytes (UG__CF_BUFFER is added). */
void mock_recv(uint64_t ud, const void *data, size_t len, uint32_t flags);
void mock_recv_str(uint64_t ud, const char *s, uint32_t flags);
/* Complete the oldest send on fd that has no completion queued yet: res bytes (MOCK_ALL: all
 * of them), or an error. Returns the operation, NULL if there is none. */
#define MOCK_ALL INT32_MAX
mock_op *mock_complete_send(int fd, int32_t res);

unsigned mock_nops(void);
mock_op *mock_op_at(unsigned i);
/* The most recent operation of kind on fd (-1: any fd), at index >= from. NULL if none. */
mock_op *mock_last(int kind, int fd, unsigned from);
/* The oldest send on fd without a completion queued. */
mock_op *mock_pending_send(int fd);
unsigned mock_count(int kind, int fd, unsigned from);
/* Cancels (kind MK_CANCEL) naming ud. */
unsigned mock_cancels_of(uint64_t ud);
/* Receive buffers handed to the core and not released. */
unsigned mock_buffers_out(void);
unsigned mock_nerrors(void);
const char *mock_error(unsigned i);

/* Log sink that keeps the messages. */
void mock_log(void *user, ug_log_level lvl, const char *msg);
int mock_log_has(const char *needle);

/* ---- connections ---- */
typedef struct mock_conn {
    int fd;   /* the core's end */
    int peer; /* the test's end (2 s receive timeout) */
    dev_t dev;
    ino_t ino;
    uint64_t recv_ud; /* the user_data of the recv the core armed when it accepted fd */
} mock_conn;

/* socketpair() only (to deliver its accept completion by hand). 0 or -1. */
int mock_pair(mock_conn *mc);
/* socketpair(), deliver an accept completion with fd (flags: UG__CF_MORE normally), sync, and
 * find the recv the core armed. 0, or -1 if the core armed none. */
int mock_accept(mock_conn *mc, uint32_t flags);
/* 1 if the core's end is still open (the descriptor number still names our socket). */
int mock_fd_open(const mock_conn *mc);
/* 1 if the peer reads EOF (or a reset) right now, 0 if not (no data may be pending). */
int mock_peer_eof(const mock_conn *mc);
/* Bytes the peer can read right now (without consuming them). */
int mock_peer_pending(const mock_conn *mc);
/* Close the test's end. */
void mock_conn_close(mock_conn *mc);

/* ---- loop-thread calls ---- */
/* ug_server_post(fn) then mock_sync(): fn has run on the loop thread when this returns. */
int mock_on_loop(ug_server *srv, ug_post_fn fn, void *user);
void mock_stats(ug_server *srv, ug_stats *out);

/* ---- parsing what was sent ---- */
typedef struct mock_resp {
    int status;
    int minor;
    char head[4096]; /* status line and headers, NUL-terminated */
    char *body;      /* de-chunked, NUL-terminated (malloc'd) */
    size_t body_len;
    long clen;   /* Content-Length, -1 if absent */
    int chunked; /* Transfer-Encoding: chunked */
} mock_resp;

/* Parse one response from buf. no_body: the request was HEAD. eof_delimited: when there is
 * neither Content-Length nor chunked framing, the body is the rest of buf. Returns the bytes
 * the response takes, or -1 if buf does not start with a complete response. */
long mock_parse_resp(const char *buf, size_t len, int no_body, int eof_delimited, mock_resp *r);
void mock_resp_free(mock_resp *r);
/* The value of the first header named name (case-insensitive), in a static buffer; NULL. */
const char *mock_resp_header(const mock_resp *r, const char *name);
/* Number of header lines named name. */
int mock_resp_header_count(const mock_resp *r, const char *name);

/* A configuration for mock-driven tests: loopback, port 0, and timeouts long enough that
 * nothing expires by itself while a test steps the loop. */
void mock_base_cfg(ug_config *cfg);

#endif
