/* The connection state machine (conn.c, server.c), driven step by step through the mock
 * backend: the test delivers every completion and checks every operation the core starts.
 * Tests whose name starts with BUG_ document a defect of the core: they fail until it is
 * fixed. */
#include "mock_backend.h"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static ug_server *srv;
static mock_conn cn, cn2, cn3;

/* What the handlers and cancel callbacks saw (written on the loop thread, read by the test
 * after mock_sync, which orders the two). */
static struct {
    uint64_t id;
    int deferred;
    int cancels;
    ug_cancel_reason why;
    int found_in_cancel;
    int handled;
    int timer_fired;
    int timer_rc;
    int hold_in_cancel; /* on_cancel takes a hold (ug_server_hold) */
    int hold_rc;
} g;

static const char GET_HELLO[] = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
static const char GET_A[] = "GET /a HTTP/1.1\r\nHost: t\r\n\r\n";
static const char GET_B[] = "GET /b HTTP/1.1\r\nHost: t\r\n\r\n";
static const char GET_C[] = "GET /c HTTP/1.1\r\nHost: t\r\n\r\n";
static const char GET_DEFER[] = "GET /defer HTTP/1.1\r\nHost: t\r\n\r\n";

/* ---------------------------------------------------------------- handlers ---- */

static void on_cancel(ug_request *req, ug_cancel_reason why, void *user) {
    (void)user;
    g.cancels++;
    g.why = why;
    g.found_in_cancel = ug_req_find(ug_req_server(req), g.id) != NULL;
    if (g.hold_in_cancel) g.hold_rc = ug_server_hold(ug_req_server(req));
}

static void release_hold(ug_server *s, void *user) {
    (void)user;
    ug_server_release(s);
}

/* Blocks the loop for a while: stands for a busy iteration (many connections' work). */
static ug_handler_result h_slow(ug_request *req, void *user) {
    (void)user;
    g.handled++;
    usleep(300000);
    ug_resp_send(req, 200, "text/plain", "slow", 4);
    return UG_DONE;
}

static ug_handler_result h_defer(ug_request *req, void *user) {
    (void)user;
    g.id = ug_req_id(req);
    g.deferred++;
    ug_req_on_cancel(req, on_cancel, NULL);
    return UG_LATER;
}

static ug_handler_result h_noresp(ug_request *req, void *user) {
    (void)req;
    (void)user;
    g.handled++;
    return UG_DONE;
}

/* 200 with the path as the body. */
static ug_handler_result h_echo(ug_request *req, void *user) {
    (void)user;
    g.handled++;
    ug_str p = ug_req_path(req);
    ug_resp_send(req, 200, "text/plain", p.ptr, p.len);
    return UG_DONE;
}

static void timer_fired(ug_request *req, void *user) {
    (void)user;
    g.timer_fired++;
    ug_resp_send(req, 200, "text/plain", "timer", 5);
}

static ug_handler_result h_timer(ug_request *req, void *user) {
    (void)user;
    g.id = ug_req_id(req);
    g.deferred++;
    ug_req_on_cancel(req, on_cancel, NULL);
    g.timer_rc = ug_req_timer(req, 20, timer_fired, NULL);
    return UG_LATER;
}

struct late {
    uint64_t id;
    int found;
    int rc;
};

static void respond_late(ug_server *s, void *user) {
    struct late *l = user;
    ug_request *r = ug_req_find(s, l->id);
    l->found = r != NULL;
    l->rc = r ? ug_resp_send(r, 200, "text/plain", "late", 4) : -1;
}

static void find_only(ug_server *s, void *user) {
    struct late *l = user;
    l->found = ug_req_find(s, l->id) != NULL;
}

/* Defers; its cancel callback answers the request whose id is in g_answer_id (from inside
 * another connection's completion). */
static uint64_t g_answer_id;

static void on_cancel_answer(ug_request *req, ug_cancel_reason why, void *user) {
    (void)why;
    (void)user;
    ug_request *other = ug_req_find(ug_req_server(req), g_answer_id);
    if (other) ug_resp_send(other, 200, "text/plain", "answered", 8);
}

static ug_handler_result h_defer_answer(ug_request *req, void *user) {
    (void)user;
    ug_req_on_cancel(req, on_cancel_answer, NULL);
    return UG_LATER;
}

/* Sets its own Date, then defers (and never answers). */
static ug_handler_result h_defer_date(ug_request *req, void *user) {
    (void)user;
    ug_resp_header(req, "Date", "Thu, 01 Jan 1970 00:00:00 GMT");
    return h_defer(req, NULL);
}

/* ---------------------------------------------------------------- fixture ---- */

static int start_cfg(ug_config *cfg) {
    memset(&g, 0, sizeof g);
    memset(&cn, 0, sizeof cn);
    memset(&cn2, 0, sizeof cn2);
    memset(&cn3, 0, sizeof cn3);
    cn.peer = cn2.peer = cn3.peer = -1;
    mock_reset();
    srv = NULL;
    int rc = mock_server_create(&srv, cfg);
    if (rc) return rc;
    ug_route(srv, "GET", "/defer", UG_ROUTE_EXACT, h_defer, NULL);
    ug_route(srv, "GET", "/noresp", UG_ROUTE_EXACT, h_noresp, NULL);
    ug_route(srv, "GET", "/timer", UG_ROUTE_EXACT, h_timer, NULL);
    ug_route(srv, "GET", "/slow", UG_ROUTE_EXACT, h_slow, NULL);
    ug_route(srv, "GET", "/defer-answer", UG_ROUTE_EXACT, h_defer_answer, NULL);
    ug_route(srv, "GET", "/defer-date", UG_ROUTE_EXACT, h_defer_date, NULL);
    ug_route(srv, NULL, "/", UG_ROUTE_PREFIX, h_echo, NULL);
    mock_run(srv);
    return 0;
}

static void start(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
}

/* End the run (whatever state it is in), free, and check the backend contract held. */
static void finish(void) {
    mock_stop(srv, NULL);
    ug_server_free(srv);
    srv = NULL;
    CU_ASSERT_EQUAL(mock_buffers_out(), 0);
    CU_ASSERT_EQUAL(mock_nerrors(), 0);
    for (unsigned i = 0; i < mock_nerrors(); i++) fprintf(stderr, "  %s\n", mock_error(i));
    mock_conn_close(&cn);
    mock_conn_close(&cn2);
    mock_conn_close(&cn3);
}

/* Step the loop (in real time) until cond holds, for at most 3 s. */
#define WAIT_FOR(cond)                                                                             \
    do {                                                                                           \
        uint64_t t0_ = tu_now_ms();                                                                \
        while (!(cond) && tu_now_ms() - t0_ < 3000) {                                              \
            usleep(5000);                                                                          \
            mock_sync();                                                                           \
        }                                                                                          \
    } while (0)

/* The send op's bytes hold exactly these responses (bodies given), in order. */
static void assert_responses(const mock_op *s, int n, const char *const *bodies) {
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        mock_resp r;
        long used = mock_parse_resp(s->data + off, s->len - off, 0, 0, &r);
        CU_ASSERT_FATAL(used > 0);
        CU_ASSERT_EQUAL(r.status, 200);
        CU_ASSERT_STRING_EQUAL(r.body, bodies[i]);
        off += (size_t)used;
        mock_resp_free(&r);
    }
    CU_ASSERT_EQUAL(off, s->len);
}

static void peer_reads(const mock_conn *c, int status, const char *body) {
    char b[512];
    CU_ASSERT_EQUAL(tu_read_response(c->peer, b, sizeof b, NULL), status);
    CU_ASSERT_STRING_EQUAL(b, body);
}

/* ---------------------------------------------------------------- tests ---- */

static void test_one_get_one_send(void) {
    start();
    CU_ASSERT_EQUAL(mock_count(MK_ACCEPT, -1, 0), 1);
    CU_ASSERT_EQUAL(mock_last(MK_ACCEPT, -1, 0)->ud, MOCK_ACCEPT_UD);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    CU_ASSERT_EQUAL(UG_UD_OP(cn.recv_ud), UG_OP_RECV);
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, 0), 1);

    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    CU_ASSERT_EQUAL(mock_count(MK_RECV, -1, from), 0); /* the multishot recv stays armed */
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(UG_UD_OP(s->ud), UG_OP_SEND);
    CU_ASSERT_EQUAL(UG_UD_IDX(s->ud), UG_UD_IDX(cn.recv_ud));
    CU_ASSERT_EQUAL(UG_UD_GEN(s->ud), UG_UD_GEN(cn.recv_ud));
    CU_ASSERT(s->len > 17 && !memcmp(s->data, "HTTP/1.1 200 OK\r\n", 17));
    const char *bodies[] = {"/hello"};
    assert_responses(s, 1, bodies);

    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    peer_reads(&cn, 200, "/hello");
    CU_ASSERT_EQUAL(mock_peer_pending(&cn), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from), 1);
    CU_ASSERT(mock_fd_open(&cn));
    CU_ASSERT(!mock_peer_eof(&cn));
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.requests, 1);
    CU_ASSERT_EQUAL(st.responses[2], 1);
    CU_ASSERT_EQUAL(st.conns_accepted, 1);
    CU_ASSERT_EQUAL(st.conns_open, 1);
    finish();
}

static void test_pipelined_three_in_one_send(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    char req[256];
    snprintf(req, sizeof req, "%s%s%s", GET_A, GET_B, GET_C);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, req, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    const char *bodies[] = {"/a", "/b", "/c"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 3, bodies);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    peer_reads(&cn, 200, "/a");
    peer_reads(&cn, 200, "/b");
    peer_reads(&cn, 200, "/c");
    CU_ASSERT(mock_fd_open(&cn));
    finish();
}

/* A request split over several receives (inside the request line, inside a header) is
 * answered once, after its last byte. */
static void test_request_split_over_recvs(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, "GET /sp", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_recv_str(cn.recv_ud, "lit HTTP/1.1\r\nHo", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from), 0);
    mock_recv_str(cn.recv_ud, "st: t\r\n\r\nGET /a HTTP/1.1\r\nHost: t\r\n", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from), 1);
    const char *b1[] = {"/split"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 1, b1);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_recv_str(cn.recv_ud, "\r\n", UG__CF_MORE); /* completes the pipelined /a */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from), 2);
    const char *b2[] = {"/a"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 1, b2);
    finish();
}

static void test_short_write_sends_rest(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *s1 = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s1);
    size_t L = s1->len;
    CU_ASSERT_FATAL(L > 20);

    mock_complete_send(cn.fd, 10);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL_FATAL(mock_count(MK_SEND, cn.fd, from), 2);
    mock_op *s2 = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_EQUAL(s2->ud, s1->ud);
    CU_ASSERT_EQUAL_FATAL(s2->len, L - 10);
    CU_ASSERT(!memcmp(s2->data, s1->data + 10, L - 10));
    CU_ASSERT(mock_peer_pending(&cn) == 10);

    mock_complete_send(cn.fd, 5);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL_FATAL(mock_count(MK_SEND, cn.fd, from), 3);
    mock_op *s3 = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_EQUAL_FATAL(s3->len, L - 15);
    CU_ASSERT(!memcmp(s3->data, s1->data + 15, L - 15));

    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 3);
    peer_reads(&cn, 200, "/hello");
    CU_ASSERT_EQUAL(mock_peer_pending(&cn), 0);
    CU_ASSERT(mock_fd_open(&cn));
    finish();
}

/* Responses appended while a send is in flight go out after it (its short-write remainder
 * first), in one send, in request order. */
static void test_appends_during_send_keep_order(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_A, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *s1 = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s1);
    mock_recv_str(cn.recv_ud, GET_B, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_recv_str(cn.recv_ud, GET_C, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1); /* one send at a time */

    mock_complete_send(cn.fd, 7);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL_FATAL(mock_count(MK_SEND, cn.fd, from), 2);
    mock_op *s2 = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_EQUAL_FATAL(s2->len, s1->len - 7);
    CU_ASSERT(!memcmp(s2->data, s1->data + 7, s2->len));

    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL_FATAL(mock_count(MK_SEND, cn.fd, from), 3);
    const char *bodies[] = {"/b", "/c"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 2, bodies);

    /* And once more with the other buffer in flight: /a while /b's send is pending. */
    mock_recv_str(cn.recv_ud, GET_A, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 3);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL_FATAL(mock_count(MK_SEND, cn.fd, from), 4);
    const char *b4[] = {"/a"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 1, b4);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);

    peer_reads(&cn, 200, "/a");
    peer_reads(&cn, 200, "/b");
    peer_reads(&cn, 200, "/c");
    peer_reads(&cn, 200, "/a");
    CU_ASSERT_EQUAL(mock_peer_pending(&cn), 0);
    finish();
}

static void test_eof_closes_idle(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_complete(cn.recv_ud, 0, 0); /* EOF: the final completion of the recv */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    CU_ASSERT(mock_peer_eof(&cn));
    CU_ASSERT_EQUAL(mock_count(MK_CANCEL, -1, from), 0); /* nothing left to cancel */
    CU_ASSERT_EQUAL(mock_count(MK_RECV, -1, from), 0);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.conns_closed, 1);
    CU_ASSERT_EQUAL(st.conns_open, 0);
    CU_ASSERT_EQUAL(st.conns_reset, 0);
    finish();
}

/* EOF after a request was read and answered: the connection closes once the response's
 * send has completed (not before: its buffer is still the kernel's). */
static void test_eof_after_request_closes_after_send(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    mock_complete(cn.recv_ud, 0, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(mock_fd_open(&cn));
    CU_ASSERT_EQUAL(mock_count(MK_CANCEL, -1, from), 0);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    peer_reads(&cn, 200, "/hello");
    CU_ASSERT(mock_peer_eof(&cn));
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.conns_closed, 1);
    finish();
}

/* Regression (found by this suite): a complete request and the client's EOF delivered in the same
 * completion batch (a client that half-closes after its request, e.g. `nc -N`): conn.c
 * promises "complete requests already buffered are still answered", but the EOF sets
 * UG_CF_CLOSE_AFTER before the request is parsed and process() then discards all input
 * ("nothing after a closing response is read"): no response, the connection just closes. */
static void test_request_and_eof_in_one_batch(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_hold();
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    mock_complete(cn.recv_ud, 0, 0);
    mock_release();
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.handled, 1);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    if (mock_count(MK_SEND, cn.fd, from) == 1) {
        CU_ASSERT(mock_fd_open(&cn));
        mock_complete_send(cn.fd, MOCK_ALL);
        CU_ASSERT_EQUAL(mock_sync(), 0);
        peer_reads(&cn, 200, "/hello");
    }
    CU_ASSERT(!mock_fd_open(&cn));
    CU_ASSERT(mock_peer_eof(&cn));
    finish();
}

/* A failed send closes the connection; the recv is still armed, so the core cancels it and
 * the fd stays open until the recv's final completion. */
static void test_close_cancels_recv_and_waits(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mock_complete_send(cn.fd, -EPIPE));
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 1);
    CU_ASSERT(mock_fd_open(&cn));
    CU_ASSERT(!mock_peer_eof(&cn));

    /* Bytes racing the cancel: dropped, buffer given back, still open. */
    mock_recv_str(cn.recv_ud, GET_A, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(mock_fd_open(&cn));
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from), 1);
    CU_ASSERT_EQUAL(mock_buffers_out(), 0);

    mock_complete(cn.recv_ud, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    CU_ASSERT(mock_peer_eof(&cn));
    CU_ASSERT_EQUAL(mock_count(MK_RECV, -1, from), 0);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.conns_closed, 1);
    CU_ASSERT_EQUAL(st.conns_reset, 1);
    CU_ASSERT_EQUAL(st.conns_open, 0);
    finish();
}

/* A reset with a send in flight: the send is cancelled and the fd closed only after the
 * send's final completion. */
static void test_close_cancels_send_and_waits(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mock_complete(cn.recv_ud, -ECONNRESET, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_cancels_of(s->ud), 1);
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 0); /* its final completion was seen */
    CU_ASSERT(mock_fd_open(&cn));
    mock_complete(s->ud, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.conns_closed, 1);
    CU_ASSERT_EQUAL(st.conns_reset, 1);
    finish();
}

/* Production builds count a completion for a slot that is gone and drop it. */
static __attribute__((unused)) void test_stale_completion_ignored(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    uint32_t idx = UG_UD_IDX(cn.recv_ud), gen = UG_UD_GEN(cn.recv_ud);
    mock_recv_str(UG_UD(UG_OP_RECV, idx, gen + 1), GET_HELLO, UG__CF_MORE);
    mock_recv_str(UG_UD(UG_OP_RECV, idx + 77, 1), GET_HELLO, UG__CF_MORE);
    mock_complete(UG_UD(UG_OP_SEND, idx, gen + 1), 100, 0);
    mock_complete(UG_UD(UG_OP_RECV, idx, gen - 1), 0, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from), 0);
    CU_ASSERT_EQUAL(mock_buffers_out(), 0);
    CU_ASSERT(mock_log_has("stale completion"));
    ug_stats stale;
    mock_stats(srv, &stale);
    CU_ASSERT_EQUAL(stale.stale_completions, 4);
    CU_ASSERT(mock_fd_open(&cn));

    /* The connection is unaffected. */
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);

    /* Close it; the next connection reuses the slot with a new generation: completions for
     * the old one must not reach the new one. */
    mock_complete(cn.recv_ud, 0, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0);
    CU_ASSERT_EQUAL(UG_UD_IDX(cn2.recv_ud), idx);
    CU_ASSERT_NOT_EQUAL(UG_UD_GEN(cn2.recv_ud), gen);
    unsigned from2 = mock_nops();
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    mock_complete(cn.recv_ud, -ECONNRESET, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from2), 0);
    CU_ASSERT(mock_fd_open(&cn2));
    CU_ASSERT_EQUAL(mock_buffers_out(), 0);
    mock_recv_str(cn2.recv_ud, GET_A, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    const char *b[] = {"/a"};
    assert_responses(mock_last(MK_SEND, cn2.fd, from2), 1, b);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.requests, 2);
    CU_ASSERT_EQUAL(st.conns_reset, 0);
    finish();
}

static void test_enobufs_rearms_recv(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_complete(cn.recv_ud, -ENOBUFS, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 1);
    mock_op *r = mock_last(MK_RECV, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(r->ud, cn.recv_ud);
    CU_ASSERT(mock_fd_open(&cn));
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.recv_rearms, 1);
    CU_ASSERT_EQUAL(st.conns_closed, 0);
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    finish();
}

/* The last completion of a multishot recv may carry data (CQ overflow): handle it, re-arm. */
static void test_final_recv_with_data_rearms(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_HELLO, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 1);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    const char *b[] = {"/hello"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 1, b);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.recv_rearms, 1);
    /* The re-armed recv works like the first. */
    mock_complete_send(cn.fd, MOCK_ALL);
    mock_recv_str(cn.recv_ud, GET_A, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 2);
    finish();
}

static void test_accept_without_more_rearms(void) {
    start();
    unsigned from = mock_nops();
    CU_ASSERT_FATAL(mock_accept(&cn, 0) == 0); /* accepted fd on the final completion */
    CU_ASSERT_EQUAL(mock_count(MK_ACCEPT, -1, from), 1);
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 1);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.accept_rearms, 1);
    CU_ASSERT_EQUAL(st.conns_accepted, 1);

    /* With MORE: no re-arm. */
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0);
    CU_ASSERT_EQUAL(mock_count(MK_ACCEPT, -1, from), 1);

    /* An error ends it too: re-armed at once (not a resource error). */
    mock_complete(MOCK_ACCEPT_UD, -ECONNABORTED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_ACCEPT, -1, from), 2);
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.accept_errors, 1);
    CU_ASSERT_EQUAL(st.accept_rearms, 2);

    /* EMFILE: re-armed after a pause (~100 ms), not in a spin. */
    uint64_t t0 = tu_now_ms();
    mock_complete(MOCK_ACCEPT_UD, -EMFILE, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_ACCEPT, -1, from), 2);
    while (mock_count(MK_ACCEPT, -1, from) == 2 && tu_now_ms() - t0 < 3000) {
        usleep(10000);
        mock_sync();
    }
    CU_ASSERT_EQUAL(mock_count(MK_ACCEPT, -1, from), 3);
    CU_ASSERT(tu_now_ms() - t0 >= 50);
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.accept_errors, 2);

    /* The connections accepted on the way still work. */
    mock_recv_str(cn.recv_ud, GET_A, UG__CF_MORE);
    mock_recv_str(cn2.recv_ud, GET_B, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn2.fd, from), 1);
    finish();
}

static void test_shutdown_no_connections(void) {
    start();
    unsigned from = mock_nops();
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, NULL), 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_cancels_of(MOCK_ACCEPT_UD), 1);
    mock_op *t = mock_last(MK_TIMER, -1, from);
    CU_ASSERT_PTR_NOT_NULL(t);
    if (t) CU_ASSERT_EQUAL(t->ud, MOCK_DEADLINE_UD);
    CU_ASSERT(!mock_done());
    CU_ASSERT_EQUAL(ug_server_state(srv), UG_GATE_DRAINING);
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, NULL), 0); /* harmless */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_cancels_of(MOCK_ACCEPT_UD), 1);

    mock_complete(MOCK_ACCEPT_UD, -ECANCELED, 0);
    ug_report rep;
    CU_ASSERT_EQUAL(mock_join(&rep), 0);
    CU_ASSERT_EQUAL(rep.accepted_after_close, 0);
    CU_ASSERT_EQUAL(rep.accepted_at_close, 0);
    CU_ASSERT_EQUAL(rep.conns_at_close, 0);
    CU_ASSERT_EQUAL(rep.conns_forced, 0);
    CU_ASSERT_EQUAL(ug_server_state(srv), UG_GATE_CLOSED);
    /* The deadline timer still armed is left to the backend's teardown at ug_server_free. */
    CU_ASSERT_EQUAL(mock_count(MK_TIMER_CANCEL, -1, from), 0);
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, NULL), -ESHUTDOWN);
    finish();
}

/* An accept completion racing the cancel is a connection accepted before the close point:
 * it is served (with Connection: close), and the run ends when it does. */
static void test_shutdown_accept_racing_cancel(void) {
    start();
    unsigned from = mock_nops();
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, NULL), 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_complete(MOCK_ACCEPT_UD, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_done());
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mock_resp r;
    CU_ASSERT(mock_parse_resp(s->data, s->len, 0, 0, &r) == (long)s->len);
    CU_ASSERT_EQUAL(r.status, 200);
    const char *conn = mock_resp_header(&r, "Connection");
    CU_ASSERT(conn && !strcmp(conn, "close"));
    mock_resp_free(&r);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    peer_reads(&cn, 200, "/hello");
    CU_ASSERT(mock_peer_eof(&cn)); /* our FIN */
    CU_ASSERT(!mock_done());       /* still lingering for the client's */
    mock_complete(cn.recv_ud, 0, 0);
    ug_report rep;
    CU_ASSERT_EQUAL(mock_join(&rep), 0);
    CU_ASSERT_EQUAL(rep.accepted_at_close, 1);
    CU_ASSERT_EQUAL(rep.accepted_after_close, 0);
    CU_ASSERT_EQUAL(rep.conns_drained, 1);
    CU_ASSERT(!mock_fd_open(&cn));
    finish();
}

static void test_shutdown_waits_for_deferred(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.deferred, 1);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from), 0);

    CU_ASSERT_EQUAL(ug_server_shutdown(srv, NULL), 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_complete(MOCK_ACCEPT_UD, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    usleep(50000);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_done());
    CU_ASSERT_EQUAL(ug_server_state(srv), UG_GATE_DRAINING);
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 0);
    CU_ASSERT(mock_fd_open(&cn));

    struct late l = {g.id, 0, -1};
    CU_ASSERT_EQUAL(mock_on_loop(srv, respond_late, &l), 0);
    CU_ASSERT(l.found);
    CU_ASSERT_EQUAL(l.rc, 0);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mock_resp r;
    CU_ASSERT(mock_parse_resp(s->data, s->len, 0, 0, &r) == (long)s->len);
    const char *conn = mock_resp_header(&r, "Connection");
    CU_ASSERT(conn && !strcmp(conn, "close"));
    mock_resp_free(&r);
    CU_ASSERT(!mock_done());
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    peer_reads(&cn, 200, "late");
    CU_ASSERT(mock_peer_eof(&cn));
    mock_complete(cn.recv_ud, 0, 0); /* the client closes its side */
    ug_report rep;
    CU_ASSERT_EQUAL(mock_join(&rep), 0);
    CU_ASSERT_EQUAL(g.cancels, 0);
    CU_ASSERT_EQUAL(rep.conns_at_close, 1);
    CU_ASSERT_EQUAL(rep.conns_drained, 1);
    CU_ASSERT_EQUAL(rep.conns_forced, 0);
    CU_ASSERT_EQUAL(rep.requests_drained, 1);
    CU_ASSERT_EQUAL(rep.requests_forced, 0);
    CU_ASSERT(!mock_fd_open(&cn));
    finish();
}

static void test_shutdown_deadline_forces(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.deferred, 1);

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    ug_shutdown_opts o = {.drain_timeout_ms = 50};
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, &o), 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *t = mock_last(MK_TIMER, -1, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->ud, MOCK_DEADLINE_UD);
    CU_ASSERT(t->deadline_ns >= now_ns + 40000000u && t->deadline_ns <= now_ns + 1050000000u);
    mock_complete(MOCK_ACCEPT_UD, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_done());
    CU_ASSERT_EQUAL(g.cancels, 0);

    mock_complete(MOCK_DEADLINE_UD, 0, 0); /* the deadline fires */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.cancels, 1);
    CU_ASSERT_EQUAL(g.why, UG_CANCEL_DEADLINE);
    CU_ASSERT_EQUAL(g.found_in_cancel, 0);
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 1);
    CU_ASSERT(!mock_done()); /* the recv's final completion is still due */
    CU_ASSERT(mock_fd_open(&cn));
    mock_complete(cn.recv_ud, -ECANCELED, 0);
    ug_report rep;
    CU_ASSERT_EQUAL(mock_join(&rep), 1);
    CU_ASSERT(!mock_fd_open(&cn));
    CU_ASSERT_EQUAL(g.cancels, 1);
    CU_ASSERT_EQUAL(rep.conns_at_close, 1);
    CU_ASSERT_EQUAL(rep.conns_forced, 1);
    CU_ASSERT_EQUAL(rep.requests_forced, 1);
    CU_ASSERT_EQUAL(rep.conns_drained, 0);
    ug_stats st;
    ug_server_stats(srv, &st);
    CU_ASSERT_EQUAL(st.requests_cancelled, 1);
    finish();
}

static void test_handler_without_response_500(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud,
                  "GET /noresp HTTP/1.1\r\nHost: t\r\n\r\n" /* then a pipelined */
                  "GET /a HTTP/1.1\r\nHost: t\r\n\r\n",
                  UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.handled, 1); /* /a is never handled: the 500 closes the connection */
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mock_resp r;
    CU_ASSERT(mock_parse_resp(s->data, s->len, 0, 0, &r) == (long)s->len);
    CU_ASSERT_EQUAL(r.status, 500);
    const char *conn = mock_resp_header(&r, "Connection");
    CU_ASSERT(conn && !strcmp(conn, "close"));
    mock_resp_free(&r);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.handler_no_response, 1);
    CU_ASSERT_EQUAL(st.responses[5], 1);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(tu_read_response(cn.peer, NULL, 0, NULL), 500);
    CU_ASSERT(mock_peer_eof(&cn));
    finish();
}

static void test_reset_cancels_deferred(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL_FATAL(g.deferred, 1);
    struct late l = {g.id, 0, -1};
    CU_ASSERT_EQUAL(mock_on_loop(srv, find_only, &l), 0);
    CU_ASSERT(l.found);

    mock_complete(cn.recv_ud, -ECONNRESET, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.cancels, 1);
    CU_ASSERT_EQUAL(g.why, UG_CANCEL_CLIENT_GONE);
    CU_ASSERT_EQUAL(g.found_in_cancel, 0);
    l.found = -1;
    CU_ASSERT_EQUAL(mock_on_loop(srv, find_only, &l), 0);
    CU_ASSERT_EQUAL(l.found, 0);
    CU_ASSERT_EQUAL(mock_on_loop(srv, respond_late, &l), 0);
    CU_ASSERT_EQUAL(l.found, 0);
    CU_ASSERT(!mock_fd_open(&cn));
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.requests_cancelled, 1);
    CU_ASSERT_EQUAL(st.conns_reset, 1);
    CU_ASSERT_EQUAL(st.conns_open, 0);
    finish();
}

static void test_eof_cancels_deferred(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_complete(cn.recv_ud, 0, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.cancels, 1);
    CU_ASSERT_EQUAL(g.why, UG_CANCEL_CLIENT_GONE);
    CU_ASSERT(!mock_fd_open(&cn));
    finish();
}

/* A request pipelined behind a deferred one waits for it; both answers leave in one send,
 * in order: the pipelined bytes arrive in the same read, or later (parked). */
static void test_deferred_then_pipelined(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    char req[256];
    snprintf(req, sizeof req, "%s%s", GET_DEFER, GET_A);
    mock_recv_str(cn.recv_ud, req, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_recv_str(cn.recv_ud, GET_B, UG__CF_MORE); /* parked behind the deferred request */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.deferred, 1);
    CU_ASSERT_EQUAL(g.handled, 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from), 0);
    struct late l = {g.id, 0, -1};
    CU_ASSERT_EQUAL(mock_on_loop(srv, respond_late, &l), 0);
    CU_ASSERT_EQUAL(l.rc, 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    const char *b[] = {"late", "/a", "/b"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 3, b);
    finish();
}

static void test_bad_request_400_and_close(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(
        cn.recv_ud,
        "GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\n",
        UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mock_resp r;
    CU_ASSERT(mock_parse_resp(s->data, s->len, 0, 0, &r) == (long)s->len);
    CU_ASSERT_EQUAL(r.status, 400);
    mock_resp_free(&r);
    CU_ASSERT_EQUAL(g.handled, 0);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(tu_read_response(cn.peer, NULL, 0, NULL), 400);
    CU_ASSERT(mock_peer_eof(&cn));
    CU_ASSERT(mock_fd_open(&cn)); /* lingering: reading until the client closes */
    mock_recv_str(cn.recv_ud, "more junk", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from), 1);
    mock_complete(cn.recv_ud, 0, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.bad_requests, 1);
    finish();
}

/* Regression: a connection closed and its slot reused by an accept in the same completion
 * batch used to truncate the dirty list (slot_alloc reset dirty_next), so other connections'
 * input of that batch was never processed (the request hung until a timeout). */
static void test_dirty_list_survives_slot_reuse(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);  /* slot 0 */
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0); /* slot 1 */
    CU_ASSERT_FATAL(mock_pair(&cn3) == 0);
    unsigned from = mock_nops();
    mock_hold();
    mock_recv_str(cn.recv_ud, GET_A, UG__CF_MORE);      /* A: dirty */
    mock_recv_str(cn2.recv_ud, GET_B, UG__CF_MORE);     /* B: dirty (head of the list) */
    mock_complete(cn2.recv_ud, -ECONNRESET, 0);         /* B closes: slot 1 freed */
    mock_complete(MOCK_ACCEPT_UD, cn3.fd, UG__CF_MORE); /* C takes slot 1 */
    mock_release();
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *r = mock_last(MK_RECV, cn3.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(UG_UD_IDX(r->ud), UG_UD_IDX(cn2.recv_ud)); /* the slot was reused */
    cn3.recv_ud = r->ud;
    CU_ASSERT(!mock_fd_open(&cn2));
    /* A's request must be answered in this iteration. */
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    finish();
}

static void test_expect_100_continue(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(
        cn.recv_ud,
        "POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.handled, 0);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT(s->len == 25 && !memcmp(s->data, "HTTP/1.1 100 Continue\r\n\r\n", 25));
    mock_complete_send(cn.fd, MOCK_ALL);
    mock_recv_str(cn.recv_ud, "hello", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.handled, 1);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 2);
    const char *b[] = {"/up"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 1, b);
    finish();
}

static void test_req_timer(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, "GET /timer HTTP/1.1\r\nHost: t\r\n\r\n", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.timer_rc, 0);
    WAIT_FOR(g.timer_fired == 1);
    CU_ASSERT_EQUAL(g.timer_fired, 1);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    const char *b[] = {"timer"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 1, b);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);

    /* The request ends first (reset): its timer is dropped silently. */
    mock_recv_str(cn.recv_ud, "GET /timer HTTP/1.1\r\nHost: t\r\n\r\n", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_complete(cn.recv_ud, -ECONNRESET, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.cancels, 1);
    usleep(60000);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    usleep(20000);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.timer_fired, 1);
    finish();
}

static void test_idle_and_linger_timeouts(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.idle_timeout_ms = 50;
    cfg.linger_ms = 50;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    peer_reads(&cn, 200, "/hello");
    /* Idle: our FIN after idle_timeout_ms, then the linger ends with a cancel of the recv. */
    WAIT_FOR(mock_cancels_of(cn.recv_ud) == 1);
    CU_ASSERT(mock_peer_eof(&cn));
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 1);
    CU_ASSERT(mock_fd_open(&cn));
    mock_complete(cn.recv_ud, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.timeouts_idle, 1);
    CU_ASSERT_EQUAL(st.conns_closed, 1);
    CU_ASSERT_EQUAL(st.conns_reset, 0);
    finish();
}

static void test_header_timeout_408(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.read_header_timeout_ms = 50;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, "GET / HTTP/1.1\r\nHo", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    WAIT_FOR(mock_count(MK_SEND, cn.fd, from) == 1);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mock_resp r;
    CU_ASSERT(mock_parse_resp(s->data, s->len, 0, 0, &r) == (long)s->len);
    CU_ASSERT_EQUAL(r.status, 408);
    const char *conn = mock_resp_header(&r, "Connection");
    CU_ASSERT(conn && !strcmp(conn, "close"));
    mock_resp_free(&r);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(tu_read_response(cn.peer, NULL, 0, NULL), 408);
    CU_ASSERT(mock_peer_eof(&cn));
    /* The silent connection gets no response, only our FIN. */
    WAIT_FOR(mock_peer_eof(&cn2));
    CU_ASSERT(mock_peer_eof(&cn2));
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn2.fd, from), 0);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.timeouts_read_header, 2);
    finish();
}

static void test_write_timeout(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.write_timeout_ms = 50;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    WAIT_FOR(mock_cancels_of(s->ud) == 1);
    CU_ASSERT_EQUAL(mock_cancels_of(s->ud), 1);
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 1);
    CU_ASSERT(mock_fd_open(&cn));
    mock_complete(s->ud, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(mock_fd_open(&cn)); /* the recv's final is still due */
    mock_complete(cn.recv_ud, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.timeouts_write, 1);
    CU_ASSERT_EQUAL(st.conns_reset, 1);
    finish();
}

static void test_lame_duck(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    ug_shutdown_opts o = {.drain_delay_ms = 100};
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, &o), 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(ug_server_state(srv), UG_GATE_LAME_DUCK);
    CU_ASSERT_EQUAL(mock_cancels_of(MOCK_ACCEPT_UD), 0); /* still accepting */
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mock_resp r;
    CU_ASSERT(mock_parse_resp(s->data, s->len, 0, 0, &r) == (long)s->len);
    const char *conn = mock_resp_header(&r, "Connection");
    CU_ASSERT(conn && !strcmp(conn, "close"));
    mock_resp_free(&r);
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0); /* accepted in lame duck */
    WAIT_FOR(ug_server_state(srv) == UG_GATE_DRAINING);
    CU_ASSERT_EQUAL(ug_server_state(srv), UG_GATE_DRAINING);
    CU_ASSERT_EQUAL(mock_cancels_of(MOCK_ACCEPT_UD), 1);
    mock_complete(MOCK_ACCEPT_UD, -ECANCELED, 0);
    mock_complete_send(cn.fd, MOCK_ALL);
    mock_complete(cn.recv_ud, 0, 0);
    mock_complete(cn2.recv_ud, 0, 0);
    ug_report rep;
    CU_ASSERT_EQUAL(mock_join(&rep), 0);
    CU_ASSERT(rep.lame_duck_us >= 50000);
    CU_ASSERT_EQUAL(rep.conns_at_close, 2);
    CU_ASSERT_EQUAL(rep.conns_drained, 2);
    finish();
}

/* The backend fails: the run ends with its error, pending requests are cancelled. */
static void test_wait_failure_ends_run(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.deferred, 1);
    mock_fail_wait(-EIO);
    ug_report rep;
    CU_ASSERT_EQUAL(mock_join(&rep), -EIO);
    CU_ASSERT_EQUAL(g.cancels, 1);
    CU_ASSERT_EQUAL(ug_server_state(srv), UG_GATE_CLOSED);
    CU_ASSERT_EQUAL(ug_server_post(srv, NULL, NULL), -EINVAL);
    ug_server_free(srv);
    srv = NULL;
    CU_ASSERT(!mock_fd_open(&cn)); /* closed by ug_server_free at the latest */
    CU_ASSERT_EQUAL(g.cancels, 1); /* not a second time from ug_server_free */
    CU_ASSERT_EQUAL(mock_buffers_out(), 0);
    mock_conn_close(&cn);
}

/* The parked-input pause (a deferred request, 70 KiB pipelined behind it); the output
 * bound is raised so that only the parked input pauses reading. */
static void start_big_output(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.max_output_bytes = 1u << 20;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
}

static void test_paused_recv_resumes(void) {
    start_big_output();
    mock_wire(0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    size_t n = (70u * 1024) / (sizeof GET_A - 1) + 1, len = n * (sizeof GET_A - 1);
    char *big = malloc(len);
    CU_ASSERT_FATAL(big != NULL);
    for (size_t i = 0; i < n; i++) memcpy(big + i * (sizeof GET_A - 1), GET_A, sizeof GET_A - 1);
    mock_recv(cn.recv_ud, big, len, UG__CF_MORE); /* parked: over the bound, reading pauses */
    free(big);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 1);
    mock_complete(cn.recv_ud, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(mock_fd_open(&cn)); /* paused, not closed */
    unsigned from = mock_nops();
    struct late l = {g.id, 0, -1};
    CU_ASSERT_EQUAL(mock_on_loop(srv, respond_late, &l), 0);
    CU_ASSERT_EQUAL(l.rc, 0);
    CU_ASSERT_EQUAL(g.handled, (int)n);
    /* Reading resumes once the responses are sent (the output bound's low-water mark). */
    for (int i = 0; i < 8 && mock_complete_send(cn.fd, MOCK_ALL); i++) mock_sync();
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 1);
    finish();
}

/* Regression (found by this suite): reading is paused by cancelling the recv; if the deferred
 * request is answered (and the parked input consumed) before the cancel's final completion arrives,
 * the final completion only clears RECV_ARMED and returns: nothing re-arms the recv, the connection
 * never reads again (until the idle timeout closes it). */
static void test_paused_recv_resumes_after_late_cancel(void) {
    start_big_output();
    mock_wire(0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    size_t n = (70u * 1024) / (sizeof GET_A - 1) + 1, len = n * (sizeof GET_A - 1);
    char *big = malloc(len);
    CU_ASSERT_FATAL(big != NULL);
    for (size_t i = 0; i < n; i++) memcpy(big + i * (sizeof GET_A - 1), GET_A, sizeof GET_A - 1);
    mock_recv(cn.recv_ud, big, len, UG__CF_MORE);
    free(big);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 1);
    struct late l = {g.id, 0, -1};
    CU_ASSERT_EQUAL(mock_on_loop(srv, respond_late, &l), 0); /* before the cancel completes */
    CU_ASSERT_EQUAL(g.handled, (int)n);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    unsigned from = mock_nops();
    mock_complete(cn.recv_ud, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(mock_fd_open(&cn));
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 1); /* reading must resume */
    finish();
}

/* Regression (found by this suite): max_conns is not enforced. conn.c says "the gate pauses before
 * this can happen" and server.c reserves SLOT_HEADROOM for "accept completions already posted when
 * the gate pauses", but nothing pauses the accept: with max_conns = 2 the multishot accept
 * stays armed (up to max_conns + 4096 connections are served). */
static void test_max_conns_pauses_accept(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.max_conns = 2;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    CU_ASSERT_EQUAL(mock_cancels_of(MOCK_ACCEPT_UD), 0);
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0);
    /* Two open: no more may be taken, the accept must be paused (cancelled). */
    CU_ASSERT_EQUAL(mock_cancels_of(MOCK_ACCEPT_UD), 1);
    finish();
}

/* An immediate shutdown (deadline 0) forces the connections open at that moment; a
 * connection whose accept completion races the accept's cancel (or that the backlog drain
 * takes) arrives after the force: it is closed at once and counted as forced, so nothing can
 * keep ug_server_run from returning. */
static void test_immediate_shutdown_forces_racing_accept(void) {
    start();
    ug_shutdown_opts o = {.immediate = 1};
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, &o), 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_cancels_of(MOCK_ACCEPT_UD), 1);
    CU_ASSERT_FATAL(mock_pair(&cn) == 0);
    unsigned from = mock_nops();
    mock_complete(MOCK_ACCEPT_UD, cn.fd, UG__CF_MORE); /* races the cancel */
    mock_complete(MOCK_ACCEPT_UD, -ECANCELED, 0);
    CU_ASSERT(mock_sync() >= 0); /* 1: the run may already have ended (nothing left) */
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 0); /* never armed: closed at once */
    CU_ASSERT(!mock_fd_open(&cn));
    for (uint64_t t0 = tu_now_ms(); !mock_done() && tu_now_ms() - t0 < 500;) {
        usleep(5000);
        mock_sync();
    }
    CU_ASSERT(mock_done());
    finish();
}

/* A client sends a request that is answered at once (its response still being sent), then a
 * request the handler defers, then EOF, all before the send completes. The deferred request
 * is cancelled (its client is gone): dispatch() aborts the connection, but process() goes on
 * parsing the same, never-consumed request bytes (the parser is still at DONE) and
 * dispatches it a second time on the closing connection. The second request is never
 * cancelled: its cancel callback never fires. */
static void test_eof_behind_send_dispatches_twice(void) {
    start();
    mock_wire(0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_A, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1); /* in flight, not completed */
    mock_hold();
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    mock_complete(cn.recv_ud, 0, 0); /* EOF */
    mock_release();
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.deferred, 1); /* the handler runs once per request */
    CU_ASSERT_EQUAL(g.cancels, 1);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.requests, 2);
    CU_ASSERT_EQUAL(st.inflight, 0);
    mock_complete_send(cn.fd, -ECANCELED);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    CU_ASSERT_EQUAL(g.cancels, g.deferred); /* every deferred request hears about it */
    finish();
}

/* With idle_timeout_ms = 0 (and read_header_timeout_ms = 0), idle keep-alive connections are
 * in no timeout queue. ug__conn_drain only moves connections found in UG_TQ_IDLE (or
 * UG_TQ_HEADER without a context) to the drain linger, so these stay open: the drain waits
 * for the deadline and forces them, instead of lingering linger_ms and closing them. */
static void test_drain_idle_without_idle_timeout(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.idle_timeout_ms = 0;
    cfg.read_header_timeout_ms = 0;
    cfg.linger_ms = 30;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0); /* accepted, nothing sent yet */
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    peer_reads(&cn, 200, "/hello");

    ug_shutdown_opts o = {.drain_timeout_ms = 20000};
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, &o), 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_complete(MOCK_ACCEPT_UD, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    /* linger (30 ms), our FIN, linger again (30 ms), then the recv is cancelled */
    WAIT_FOR(mock_cancels_of(cn.recv_ud) == 1 && mock_cancels_of(cn2.recv_ud) == 1);
    CU_ASSERT(mock_peer_eof(&cn));
    CU_ASSERT(mock_peer_eof(&cn2));
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 1);
    CU_ASSERT_EQUAL(mock_cancels_of(cn2.recv_ud), 1);
    if (mock_cancels_of(cn.recv_ud) == 1 && mock_cancels_of(cn2.recv_ud) == 1) {
        mock_complete(cn.recv_ud, -ECANCELED, 0);
        mock_complete(cn2.recv_ud, -ECANCELED, 0);
        ug_report rep;
        CU_ASSERT_EQUAL(mock_join(&rep), 0);
        CU_ASSERT_EQUAL(rep.conns_drained, 2);
        CU_ASSERT_EQUAL(rep.conns_forced, 0);
    }
    finish();
}

/* A keep-alive client sends its next request just before the idle timeout, while the loop is
 * busy (here: a slow handler on another connection). The bytes are received (a context is
 * taken and the request is buffered) in the same batch in which the idle deadline passes,
 * but on_recv leaves the connection in UG_TQ_IDLE: tq_expire runs before flush_dirty, so the
 * idle timeout fires, begin_linger drops the buffered request with the context and sends our
 * FIN. The client loses a request it sent before we decided to close. */
static void test_idle_timeout_drops_received_request(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.idle_timeout_ms = 100;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
    mock_wire(0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0); /* cn idle: deadline now + 100 ms */
    unsigned from = mock_nops();
    mock_recv_str(cn2.recv_ud, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n", UG__CF_MORE);
    usleep(30000);                                 /* the loop is inside h_slow now */
    mock_recv_str(cn.recv_ud, GET_B, UG__CF_MORE); /* 30 ms before cn's idle deadline */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.handled, 3); /* /hello, /slow and /b */
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    CU_ASSERT(!mock_peer_eof(&cn));
    const char *b[] = {"/b"};
    if (mock_count(MK_SEND, cn.fd, from) == 1)
        assert_responses(mock_last(MK_SEND, cn.fd, from), 1, b);
    finish();
}

/* Regression: the drain deadline used to drop every hold before aborting the connections, so
 * a hold taken in a cancel callback (to flush the cancelled work, say) was never dropped and
 * ug_server_run did not return. Holds are "bounded by the drain deadline" (ugate.h). */
static void test_hold_taken_after_deadline(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.deferred, 1);
    g.hold_in_cancel = 1;
    g.hold_rc = 1;
    mock_auto(1, 1);
    ug_shutdown_opts o = {.drain_timeout_ms = 50};
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, &o), 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_complete(MOCK_DEADLINE_UD, 0, 0); /* the deadline fires */
    CU_ASSERT(mock_sync() >= 0);           /* 1: the run has already ended, as it should */
    CU_ASSERT_EQUAL(g.cancels, 1);
    CU_ASSERT_EQUAL(g.why, UG_CANCEL_DEADLINE);
    for (uint64_t t0 = tu_now_ms(); !mock_done() && tu_now_ms() - t0 < 500;) {
        usleep(5000);
        mock_sync();
    }
    /* Either the hold is refused once the deadline has passed, or the run returns anyway. */
    CU_ASSERT(mock_done() || g.hold_rc != 0);
    g.hold_in_cancel = 0;
    finish(); /* an immediate shutdown drops the stray hold */
}

/* Same with an immediate shutdown: force_all drops the holds first, then aborts the
 * connections, whose cancel callbacks take a hold that nothing drops: the run never
 * returns (a second immediate shutdown is a no-op once shutdown_seen is 2). */
static void test_hold_taken_in_immediate_cancel(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    g.hold_in_cancel = 1;
    g.hold_rc = 1;
    mock_auto(1, 1);
    ug_shutdown_opts o = {.immediate = 1};
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, &o), 0);
    CU_ASSERT(mock_sync() >= 0); /* 1: the run has already ended, as it should */
    CU_ASSERT_EQUAL(g.cancels, 1);
    for (uint64_t t0 = tu_now_ms(); !mock_done() && tu_now_ms() - t0 < 500;) {
        usleep(5000);
        mock_sync();
    }
    CU_ASSERT(mock_done() || g.hold_rc != 0);
    g.hold_in_cancel = 0;
    if (!mock_done() && g.hold_rc == 0) { /* give the stray hold back so the run can end */
        mock_on_loop(srv, release_hold, NULL);
    }
    finish();
}

/* A final recv completion with data (CQ overflow) is handled and the recv re-armed; when the
 * re-arm fails, nothing notices: the connection stays open with no recv armed, so the
 * client's next request is never read (until the idle timeout, or forever with
 * idle_timeout_ms = 0). The ENOBUFS path closes the connection in that case. */
static void test_final_recv_rearm_failure(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_fail_recv(-ENOMEM);
    mock_recv_str(cn.recv_ud, GET_HELLO, 0); /* final: no MORE */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    peer_reads(&cn, 200, "/hello");
    /* Not readable and still open would be a connection nobody reads: it must close. */
    CU_ASSERT(mock_count(MK_RECV, cn.fd, from) == 1 || !mock_fd_open(&cn));
    finish();
}

/* The same abort inside dispatch() with no send in flight finalizes the connection at once:
 * try_finalize() gives the context back (ug__ctx_put), then process() and ug__conn_flush()
 * go on reading and writing it. With the recycler full (CTX_FREE_MAX contexts on the free
 * list) ug__ctx_put frees it: a heap use-after-free (ASan reports it; a plain build reads
 * freed memory). Fill the recycler with 1024 contexts, then send a deferred request and EOF
 * in one batch. */
#define REVIEW_NCTX 1024
static void test_deferred_eof_uses_freed_context(void) {
    static mock_conn ext[REVIEW_NCTX];
    start();
    mock_wire(0);
    mock_auto(1, 0);
    int ok = 1;
    for (int i = 0; i < REVIEW_NCTX && ok; i++) ok = mock_accept(&ext[i], UG__CF_MORE) == 0;
    CU_ASSERT_FATAL(ok);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, "GET /defer HTTP/1.1\r\n", UG__CF_MORE); /* cn takes one */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    for (int i = 0; i < REVIEW_NCTX; i++) /* each connection takes a context */
        mock_recv_str(ext[i].recv_ud, "GET /a HTTP/1.1\r\n", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    for (int i = 0; i < REVIEW_NCTX; i++) /* ... and gives it back once answered */
        mock_recv_str(ext[i].recv_ud, "Host: t\r\n\r\n", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.handled, REVIEW_NCTX);
    CU_ASSERT_EQUAL(srv->loops[0]->ctx_free_count, 1024u); /* read after sync: the loop is idle */
    mock_hold();
    mock_recv_str(cn.recv_ud, "Host: t\r\n\r\n", UG__CF_MORE);
    mock_complete(cn.recv_ud, 0, 0); /* EOF */
    mock_release();
    CU_ASSERT_EQUAL(mock_sync(), 0); /* cn's context is freed, then used */
    CU_ASSERT_EQUAL(g.deferred, 1);
    CU_ASSERT_EQUAL(g.cancels, 1);
    CU_ASSERT(!mock_fd_open(&cn));
    finish();
    for (int i = 0; i < REVIEW_NCTX; i++) mock_conn_close(&ext[i]);
}

/* ugate.h: "Posted work still queued when ug_server_run returns runs before it returns", and
 * ug_server_post returns -ESHUTDOWN "once the server has stopped". ug_server_run runs the
 * posts one last time and only then sets the gate to CLOSED: a post made in between returns
 * 0 but never runs (ug_server_free frees it). A thread posting in a loop during shutdown
 * hits that window. */
static struct {
    ug_server *srv;
    atomic_int ran;
    int posted;
} pr;

static void post_count(ug_server *s, void *user) {
    (void)s;
    (void)user;
    atomic_fetch_add(&pr.ran, 1);
}

static void *poster(void *arg) {
    (void)arg;
    for (;;) {
        int rc = ug_server_post(pr.srv, post_count, NULL);
        if (rc == 0)
            pr.posted++;
        else
            break;
    }
    return NULL;
}

static void test_post_racing_the_end_of_run(void) {
    int lost = 0;
    for (int round = 0; round < 30 && !lost; round++) {
        start();
        mock_auto(1, 1);
        pr.srv = srv;
        atomic_store(&pr.ran, 0);
        pr.posted = 0;
        pthread_t t;
        CU_ASSERT_FATAL(pthread_create(&t, NULL, poster, NULL) == 0);
        usleep(1000);
        ug_server_shutdown(srv, NULL);
        mock_join(NULL);
        pthread_join(t, NULL);
        if (atomic_load(&pr.ran) != pr.posted) lost = pr.posted - atomic_load(&pr.ran);
        finish();
    }
    CU_ASSERT_EQUAL(lost, 0);
}

/* ---------------------------------------------------------------- hardening ---- */

/* Regression: a deferred request answered inside a completion batch (here by another
 * connection's cancel callback) while more bytes for its connection arrive in the same batch:
 * the new bytes went into the input ahead of the older parked ones, so the responses came
 * out of order. */
static void test_parked_input_keeps_order(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    g_answer_id = g.id;
    mock_recv_str(cn.recv_ud, GET_A, UG__CF_MORE); /* parked behind the deferred request */
    mock_recv_str(cn2.recv_ud, "GET /defer-answer HTTP/1.1\r\nHost: t\r\n\r\n", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 0);
    mock_hold();
    mock_complete(cn2.recv_ud, -ECONNRESET, 0);    /* its cancel answers cn's request... */
    mock_recv_str(cn.recv_ud, GET_B, UG__CF_MORE); /* ... and cn's next bytes arrive */
    mock_release();
    CU_ASSERT_EQUAL(mock_sync(), 0);
    const char *bodies[] = {"answered", "/a", "/b"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 3, bodies);
    finish();
}

/* Request ids when a loop's sequence wraps: never 0 (ug_req_find takes 0 for "none"), the
 * loop and slot still in them, and a stale id from before the wrap finds nothing. */
static void test_request_ids_across_the_wrap(void) {
    start();
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    srv->loops[0]->req_seq = UINT32_MAX - 1; /* the loop is idle after sync */
    uint64_t ids[3];
    for (int i = 0; i < 3; i++) {
        mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
        CU_ASSERT_EQUAL(mock_sync(), 0);
        ids[i] = g.id;
        CU_ASSERT_NOT_EQUAL(ids[i], 0);
        CU_ASSERT_EQUAL(ids[i] & 0xffffffu, 0);     /* slot 0 */
        CU_ASSERT_EQUAL((ids[i] >> 24) & 0xffu, 0); /* loop 0 */
        struct late l = {ids[i], 0, 0};
        CU_ASSERT_EQUAL(mock_on_loop(srv, respond_late, &l), 0);
        CU_ASSERT(l.found && l.rc == 0);
        mock_complete_send(cn.fd, MOCK_ALL);
        CU_ASSERT_EQUAL(mock_sync(), 0);
    }
    CU_ASSERT_EQUAL(ids[0] >> 32, UINT32_MAX);
    CU_ASSERT_EQUAL(ids[1] >> 32, 1); /* 0 skipped */
    CU_ASSERT_EQUAL(ids[2] >> 32, 2);
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    struct late stale = {ids[0], 1, 0};
    CU_ASSERT_EQUAL(mock_on_loop(srv, find_only, &stale), 0);
    CU_ASSERT_EQUAL(stale.found, 0);
    CU_ASSERT_EQUAL(ug_req_post(srv, 0, find_only, &stale), -EINVAL);
    finish();
}

/* Regression: the header timeout was judged before the batch's input was parsed, so a request
 * whose last header bytes arrived in the batch in which its deadline passed got 408. Here the
 * loop is busy (another connection's slow handler) past the deadline while the bytes wait. */
static void test_request_completed_in_time_not_408(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.read_header_timeout_ms = 150;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
    mock_auto(1, 1);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, "GET /hello HTTP/1.1\r\nHo", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_recv_str(cn2.recv_ud, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n", UG__CF_MORE);
    usleep(100000); /* the loop is inside the slow handler (300 ms) */
    mock_recv_str(cn.recv_ud, "st: t\r\n\r\n", UG__CF_MORE); /* in time, read late */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mock_resp r;
    CU_ASSERT(mock_parse_resp(s->data, s->len, 0, 0, &r) > 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "/hello");
    mock_resp_free(&r);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.timeouts_read_header, 0);
    finish();
}

/* Output backpressure on the state machine: past max_output_bytes of unsent responses the
 * pipelined requests are no longer parsed and the recv is cancelled; at a quarter of it
 * parsing goes on and the recv is re-armed. */
static void test_output_bound_pauses_and_resumes(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.max_output_bytes = 4096;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
    mock_wire(0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    enum { N = 200 };
    size_t len = N * (sizeof GET_A - 1);
    char *many = malloc(len);
    CU_ASSERT_FATAL(many != NULL);
    for (size_t i = 0; i < N; i++) memcpy(many + i * (sizeof GET_A - 1), GET_A, sizeof GET_A - 1);
    mock_recv(cn.recv_ud, many, len, UG__CF_MORE);
    free(many);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(g.handled > 0 && g.handled < N); /* parsing stopped at the bound */
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 1);
    mock_complete(cn.recv_ud, -ECANCELED, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(mock_fd_open(&cn));
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.output_pauses, 1);
    /* The client reads: every send completes; all requests get answered, reading resumes. */
    unsigned from = mock_nops();
    for (int i = 0; i < 4 * N && mock_complete_send(cn.fd, MOCK_ALL); i++) mock_sync();
    CU_ASSERT_EQUAL(g.handled, N);
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 1);
    finish();
}

/* Allocation failures (ugate_fi's hook): the connection that cannot get memory ends,
 * counted; others are unaffected. */
static int g_fail_allocs;

static int fail_alloc_hook(size_t size) {
    (void)size;
    return __atomic_load_n(&g_fail_allocs, __ATOMIC_SEQ_CST);
}

static void test_enomem_ends_the_connection(void) {
    start();
    mock_auto(1, 1);
    ug__fault_alloc_hook = fail_alloc_hook;
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0);
    __atomic_store_n(&g_fail_allocs, 1, __ATOMIC_SEQ_CST);
    mock_recv_str(cn.recv_ud, GET_HELLO, UG__CF_MORE); /* needs a context: none */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    __atomic_store_n(&g_fail_allocs, 0, __ATOMIC_SEQ_CST);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    unsigned from = mock_nops();
    mock_recv_str(cn2.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn2.fd, from), 1);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.conns_failed, 1);
    ug__fault_alloc_hook = NULL;
    finish();
}

/* With every allocation failing and the backend refusing the deadline timer, a shutdown still
 * closes the gate, drains, and ends at the deadline: what it needs was reserved at create. */
static void test_shutdown_without_memory(void) {
    start();
    mock_auto(1, 1);
    ug__fault_alloc_hook = fail_alloc_hook;
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.deferred, 1);
    __atomic_store_n(&g_fail_allocs, 1, __ATOMIC_SEQ_CST);
    mock_fail_timer(-ENOMEM);
    ug_shutdown_opts o = {.drain_timeout_ms = 100};
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, &o), 0);
    uint64_t t0 = tu_now_ms();
    ug_report rep;
    int rc = mock_join(&rep); /* gives up (and fails the program) after 5 s */
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tu_now_ms() - t0 < 3000);
    CU_ASSERT_EQUAL(g.cancels, 1);
    CU_ASSERT_EQUAL(g.why, UG_CANCEL_DEADLINE);
    CU_ASSERT_EQUAL(rep.requests_forced, 1);
    CU_ASSERT(mock_log_has("drain deadline timer refused"));
    __atomic_store_n(&g_fail_allocs, 0, __ATOMIC_SEQ_CST);
    ug__fault_alloc_hook = NULL;
    finish();
}

/* Three pipelined requests and the client's EOF in one batch: all three are answered (the
 * EOF made the first response say close and the other two were dropped). */
static void test_pipeline_then_eof_all_answered(void) {
    start();
    mock_auto(1, 1);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_hold();
    mock_recv_str(cn.recv_ud,
                  "GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /c HTTP/1.1\r\nHost: t\r\n\r\n",
                  UG__CF_MORE);
    mock_complete(cn.recv_ud, 0, 0);
    mock_release();
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const char *bodies[] = {"/a", "/b", "/c"};
    assert_responses(s, 3, bodies);
    mock_resp r;
    long n1 = mock_parse_resp(s->data, s->len, 0, 0, &r);
    CU_ASSERT(n1 > 0 && mock_resp_header(&r, "Connection") == NULL);
    mock_resp_free(&r);
    finish();
}

/* Regression (review): reading is paused (the parked input passed its bound) and the recv
 * ends by itself with ENOBUFS in the same batch, before the pause's cancel reaches it. The
 * ENOBUFS path re-armed it: paused and armed for good, the bound gone. */
static void test_enobufs_during_pause_stays_paused(void) {
    start_big_output();
    mock_wire(0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, GET_DEFER, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    size_t n = (70u * 1024) / (sizeof GET_A - 1) + 1, len = n * (sizeof GET_A - 1);
    char *big = malloc(len);
    CU_ASSERT_FATAL(big != NULL);
    for (size_t i = 0; i < n; i++) memcpy(big + i * (sizeof GET_A - 1), GET_A, sizeof GET_A - 1);
    unsigned from = mock_nops();
    mock_hold();
    mock_recv(cn.recv_ud, big, len, UG__CF_MORE); /* parked over the bound: the pause */
    mock_complete(cn.recv_ud, -ENOBUFS, 0);       /* ... but the recv had ended already */
    mock_release();
    free(big);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 1);
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 0); /* not re-armed while paused */
    /* The deferred request is answered, the responses sent: reading resumes, once. */
    struct late l = {g.id, 0, -1};
    CU_ASSERT_EQUAL(mock_on_loop(srv, respond_late, &l), 0);
    CU_ASSERT_EQUAL(l.rc, 0);
    for (int i = 0; i < 8 && mock_complete_send(cn.fd, MOCK_ALL); i++) mock_sync();
    CU_ASSERT_EQUAL(g.handled, (int)n);
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 1);
    finish();
}

/* The same race on the output bound's pause. */
static void test_enobufs_during_output_pause_stays_paused(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.max_output_bytes = 4096;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
    mock_wire(0);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    enum { N = 200 };
    size_t len = N * (sizeof GET_A - 1);
    char *many = malloc(len);
    CU_ASSERT_FATAL(many != NULL);
    for (size_t i = 0; i < N; i++) memcpy(many + i * (sizeof GET_A - 1), GET_A, sizeof GET_A - 1);
    unsigned from = mock_nops();
    mock_recv(cn.recv_ud, many, len, UG__CF_MORE);
    free(many);
    CU_ASSERT_EQUAL(mock_sync(), 0); /* parsing stops at the bound; the pause's cancel */
    CU_ASSERT_EQUAL(mock_cancels_of(cn.recv_ud), 1);
    mock_complete(cn.recv_ud, -ENOBUFS, 0); /* ... finds the recv ended by itself */
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 0);
    for (int i = 0; i < 4 * N && mock_complete_send(cn.fd, MOCK_ALL); i++) mock_sync();
    CU_ASSERT_EQUAL(g.handled, N);
    CU_ASSERT_EQUAL(mock_count(MK_RECV, cn.fd, from), 1);
    finish();
}

/* Regression (review): a handler's own Date flag outlived its request when it ended
 * without a response (here: the client reset it), and the next request served from the
 * recycled context got no Date at all. */
static void test_own_date_does_not_leak_to_the_next_request(void) {
    start();
    mock_auto(1, 1);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    mock_recv_str(cn.recv_ud, "GET /defer-date HTTP/1.1\r\nHost: t\r\n\r\n", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_complete(cn.recv_ud, -ECONNRESET, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.cancels, 1);
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn2.recv_ud, GET_HELLO, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *s = mock_last(MK_SEND, cn2.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mock_resp r;
    CU_ASSERT(mock_parse_resp(s->data, s->len, 0, 0, &r) > 0);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Date"), 1);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Server"), 1);
    mock_resp_free(&r);
    finish();
}

/* An absolute-form target without a path is routed as "/" and ug_req_path says "/" too; a
 * HEAD refused before its head is complete gets no body, also behind empty lines. */
static void test_path_of_absolute_form_and_early_head(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.max_uri_bytes = 64;
    CU_ASSERT_FATAL(start_cfg(&cfg) == 0);
    mock_auto(1, 1);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, "GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    const char *slash[] = {"/"};
    assert_responses(mock_last(MK_SEND, cn.fd, from), 1, slash);
    CU_ASSERT_FATAL(mock_accept(&cn2, UG__CF_MORE) == 0);
    from = mock_nops();
    char req[256];
    snprintf(req, sizeof req, "\r\nHEAD /%0100d HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    mock_recv_str(cn2.recv_ud, req, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    mock_op *s = mock_last(MK_SEND, cn2.fd, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mock_resp r;
    long used = mock_parse_resp(s->data, s->len, 1, 0, &r);
    CU_ASSERT_EQUAL(r.status, 414);
    CU_ASSERT_EQUAL(used, (long)s->len); /* the head only: no body after it */
    mock_resp_free(&r);
    finish();
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("conn", NULL, NULL);
    CU_add_test(s, "one GET, one send", test_one_get_one_send);
    CU_add_test(s, "3 pipelined requests, one send", test_pipelined_three_in_one_send);
    CU_add_test(s, "request split over receives", test_request_split_over_recvs);
    CU_add_test(s, "short write sends the rest", test_short_write_sends_rest);
    CU_add_test(s, "appends during a send keep order", test_appends_during_send_keep_order);
    CU_add_test(s, "EOF closes an idle connection", test_eof_closes_idle);
    CU_add_test(s, "EOF after a request closes after the send",
                test_eof_after_request_closes_after_send);
    CU_add_test(s, "close cancels the recv, fd closed after its final",
                test_close_cancels_recv_and_waits);
    CU_add_test(s, "close cancels the send, fd closed after its final",
                test_close_cancels_send_and_waits);
#ifdef NDEBUG /* a stale completion is an assertion failure in the Debug build */
    CU_add_test(s, "stale completions ignored", test_stale_completion_ignored);
#endif
    CU_add_test(s, "ENOBUFS re-arms the recv", test_enobufs_rearms_recv);
    CU_add_test(s, "final recv with data re-arms", test_final_recv_with_data_rearms);
    CU_add_test(s, "accept without MORE re-arms", test_accept_without_more_rearms);
    CU_add_test(s, "shutdown with no connections", test_shutdown_no_connections);
    CU_add_test(s, "shutdown: accept racing the cancel is served",
                test_shutdown_accept_racing_cancel);
    CU_add_test(s, "shutdown waits for a deferred request", test_shutdown_waits_for_deferred);
    CU_add_test(s, "shutdown deadline forces the close", test_shutdown_deadline_forces);
    CU_add_test(s, "UG_DONE without a response: 500", test_handler_without_response_500);
    CU_add_test(s, "reset cancels a deferred request", test_reset_cancels_deferred);
    CU_add_test(s, "EOF cancels a deferred request", test_eof_cancels_deferred);
    CU_add_test(s, "pipelined behind a deferred request", test_deferred_then_pipelined);
    CU_add_test(s, "bad request: 400 and linger", test_bad_request_400_and_close);
    CU_add_test(s, "Expect: 100-continue", test_expect_100_continue);
    CU_add_test(s, "ug_req_timer fires, dropped with the request", test_req_timer);
    CU_add_test(s, "idle and linger timeouts", test_idle_and_linger_timeouts);
    CU_add_test(s, "header timeout: 408", test_header_timeout_408);
    CU_add_test(s, "write timeout", test_write_timeout);
    CU_add_test(s, "lame duck", test_lame_duck);
    CU_add_test(s, "backend failure ends the run", test_wait_failure_ends_run);
    CU_add_test(s, "paused reading resumes", test_paused_recv_resumes);
    CU_add_test(s, "paused reading resumes after a late cancel",
                test_paused_recv_resumes_after_late_cancel);
    CU_add_test(s, "max_conns pauses the accept", test_max_conns_pauses_accept);
    CU_add_test(s, "immediate shutdown forces a racing accept",
                test_immediate_shutdown_forces_racing_accept);
    CU_add_test(s, "request and EOF in one batch are answered", test_request_and_eof_in_one_batch);
    CU_add_test(s, "dirty list survives slot reuse in one batch",
                test_dirty_list_survives_slot_reuse);
    CU_add_test(s, "EOF behind a send dispatches the deferred request twice",
                test_eof_behind_send_dispatches_twice);
    CU_add_test(s, "drain lingers idle connections without idle timeout",
                test_drain_idle_without_idle_timeout);
    CU_add_test(s, "idle timeout drops a request already received",
                test_idle_timeout_drops_received_request);
    CU_add_test(s, "hold taken after the deadline", test_hold_taken_after_deadline);
    CU_add_test(s, "hold taken in an immediate shutdown's cancel",
                test_hold_taken_in_immediate_cancel);
    CU_add_test(s, "final recv re-arm failure", test_final_recv_rearm_failure);
    CU_add_test(s, "a post racing the end of the run never runs", test_post_racing_the_end_of_run);
    CU_add_test(s, "deferred request + EOF uses a freed context",
                test_deferred_eof_uses_freed_context);
    CU_add_test(s, "parked input keeps its order when answered within a batch",
                test_parked_input_keeps_order);
    CU_add_test(s, "a request completed in the batch of its deadline: not 408",
                test_request_completed_in_time_not_408);
    CU_add_test(s, "output bound: parsing and reading pause, then resume",
                test_output_bound_pauses_and_resumes);
    CU_add_test(s, "out of memory ends the connection, counted", test_enomem_ends_the_connection);
    CU_add_test(s, "shutdown without memory still ends at the deadline",
                test_shutdown_without_memory);
    CU_add_test(s, "pipelined requests then EOF: all answered",
                test_pipeline_then_eof_all_answered);
    CU_add_test(s, "ENOBUFS racing the input pause: stays paused",
                test_enobufs_during_pause_stays_paused);
    CU_add_test(s, "ENOBUFS racing the output pause: stays paused",
                test_enobufs_during_output_pause_stays_paused);
    CU_add_test(s, "a handler's own Date does not leak to the next request",
                test_own_date_does_not_leak_to_the_next_request);
    CU_add_test(s, "absolute-form path is /; an early HEAD refusal has no body",
                test_path_of_absolute_form_and_early_head);
    CU_add_test(s, "request ids across the sequence wrap", test_request_ids_across_the_wrap);
}

int main(void) {
    return tu_main(register_suites, 60);
}
