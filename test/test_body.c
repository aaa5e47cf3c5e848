/* Streamed request bodies, end to end: Content-Length and chunked bodies split at every byte
 * boundary (trailers, and a pipelined request after them), pause and resume, the route's
 * limit (413 before the body, and mid-stream), 100-continue only when the body is read, a
 * client gone mid-body, the body timeout between pieces, an answer before the body's end. */
#include "testserver.h"
#include "testutil.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int cancels[8]; /* by ug_cancel_reason */
static int pauses;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}
#define FNV0 14695981039346656037ull

typedef struct sum {
    uint64_t n, h;
    int pause;
} sum;

static void sum_cancel(ug_request *req, ug_cancel_reason why, void *user) {
    /* The head's views are still the request's here (ASan checks the reads). */
    ug_str p = ug_req_path(req);
    CU_ASSERT(p.len >= 3 && !memcmp(p.ptr, "/b/", 3));
    CU_ASSERT_PTR_NOT_NULL(ug_req_header(req, "Host").ptr);
    pthread_mutex_lock(&mu);
    cancels[why]++;
    pthread_mutex_unlock(&mu);
    free(user);
}

static void resume(ug_request *req, void *user) {
    (void)user;
    CU_ASSERT_EQUAL(ug_req_body_resume(req), 0);
}

static void sum_piece(ug_request *req, const void *data, size_t len, int end, void *user) {
    sum *s = user;
    s->h = fnv(s->h, data, len);
    s->n += len;
    CU_ASSERT_EQUAL(ug_req_body_bytes(req), s->n);
    if (!end) {
        if (s->pause && len) { /* hold the body back, let it come again from a timer */
            CU_ASSERT_EQUAL(ug_req_body_pause(req), 0);
            CU_ASSERT_EQUAL(ug_req_timer(req, 2, resume, NULL), 0);
            pthread_mutex_lock(&mu);
            pauses++;
            pthread_mutex_unlock(&mu);
        }
        return;
    }
    CU_ASSERT_EQUAL(ug_req_body_pause(req), -EINVAL); /* its end was seen */
    ug_str t = ug_req_trailer(req, "x-t");
    char msg[128];
    int n = snprintf(msg, sizeof msg, "n=%llu h=%016llx t=%.*s", (unsigned long long)s->n,
                     (unsigned long long)s->h, t.ptr ? (int)t.len : 1, t.ptr ? t.ptr : "-");
    ug_req_on_cancel(req, NULL, NULL);
    free(s);
    ug_resp_send(req, 200, "text/plain", msg, (size_t)n);
}

static ug_handler_result h_sum(ug_request *req, void *user) {
    sum *s = calloc(1, sizeof *s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    s->h = FNV0;
    s->pause = user != NULL;
    CU_ASSERT_EQUAL(ug_req_body(req).len, 0); /* streamed: nothing buffered */
    ug_req_on_cancel(req, sum_cancel, s);
    CU_ASSERT_EQUAL(ug_req_read_body(req, sum_piece, s), 0);
    CU_ASSERT_EQUAL(ug_req_read_body(req, sum_piece, s), -EALREADY);
    return UG_LATER;
}

static ug_handler_result h_early(ug_request *req, void *user) {
    (void)user;
    ug_resp_send(req, 200, "text/plain", "early\n", 6);
    return UG_DONE;
}

static ug_handler_result h_buffered(ug_request *req, void *user) {
    (void)user;
    CU_ASSERT_EQUAL(ug_req_read_body(req, sum_piece, NULL), -EINVAL); /* not a streamed route */
    ug_str b = ug_req_body(req);
    ug_resp_send(req, 200, "text/plain", b.ptr, b.len);
    return UG_DONE;
}

static ug_handler_result mw_token(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    if (!ug_req_header(req, "X-Token").ptr) {
        ug_resp_send(req, 401, "text/plain", "no\n", 3);
        return UG_DONE;
    }
    ug_next(req, next);
    return UG_DONE;
}

static srv_ctx sc;

static void start(uint32_t body_timeout_ms) {
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.body_timeout_ms = body_timeout_ms;
    cfg.max_body_bytes = 1000; /* the routes' own limits override it */
    ts_create(&sc, &cfg);
    ug_server *s = sc.srv;
    unsigned st = UG_ROUTE_EXACT | UG_ROUTE_STREAM_BODY;
    CU_ASSERT_EQUAL(ug_route(s, "POST", "/b/sum", st, h_sum, NULL), 0);
    CU_ASSERT_EQUAL(ug_route(s, "POST", "/b/pause", st, h_sum, "pause"), 0);
    CU_ASSERT_EQUAL(ug_route(s, "POST", "/b/early", st, h_early, NULL), 0);
    CU_ASSERT_EQUAL(ug_route(s, "POST", "/b/auth", st, h_sum, NULL), 0);
    CU_ASSERT_EQUAL(ug_route(s, "POST", "/b/buffered", UG_ROUTE_EXACT, h_buffered, NULL), 0);
    CU_ASSERT_EQUAL(ug_route_use(s, "POST", "/b/auth", "token", mw_token, NULL), 0);
    CU_ASSERT_EQUAL(ug_route_body_limit(s, "POST", "/b/sum", 1u << 20), 0);
    CU_ASSERT_EQUAL(ug_route_body_limit(s, "POST", "/b/pause", 1ull << 40), 0);
    CU_ASSERT_EQUAL(ug_route_body_limit(s, "POST", "/b/buffered", 2000), 0);
    CU_ASSERT_EQUAL(ug_route_body_limit(s, "POST", "/b/buffered", 2ull << 30), -EINVAL);
    CU_ASSERT_EQUAL(ug_route_body_limit(s, "GET", "/b/sum", 10), -ENOENT);
    ts_run(&sc);
    pthread_mutex_lock(&mu);
    memset(cancels, 0, sizeof cancels);
    pauses = 0;
    pthread_mutex_unlock(&mu);
}

static int cancels_of(ug_cancel_reason why) {
    pthread_mutex_lock(&mu);
    int n = cancels[why];
    pthread_mutex_unlock(&mu);
    return n;
}

static int connect_nodelay(void) {
    int fd = tu_connect(sc.port);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void hang_up(int fd) {
    tu_forget(fd);
    close(fd);
}

static void want_sum(const char *body, const char *data, size_t n, const char *trailer) {
    char want[128];
    snprintf(want, sizeof want, "n=%zu h=%016llx t=%s", n, (unsigned long long)fnv(FNV0, data, n),
             trailer);
    CU_ASSERT_STRING_EQUAL(body, want);
}

static void test_split_everywhere(void) {
    start(5000);
    static const char pipelined[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    const char *reqs[] = {
        "POST /b/sum HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world",
        "POST /b/sum HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: tv\r\n\r\n",
    };
    for (int r = 0; r < 2; r++) {
        char all[512];
        int n = snprintf(all, sizeof all, "%s%s", reqs[r], pipelined);
        int failures = 0;
        for (int k = 1; k < n && failures < 3; k++) {
            int fd = connect_nodelay();
            CU_ASSERT_EQUAL(tu_send_all(fd, all, (size_t)k), 0);
            usleep(1500);
            CU_ASSERT_EQUAL(tu_send_all(fd, all + k, (size_t)(n - k)), 0);
            char body[256];
            int st = tu_read_response(fd, body, sizeof body, NULL);
            CU_ASSERT_EQUAL(st, 200);
            want_sum(body, "hello world", 11, r ? "tv" : "-");
            if (st != 200) failures++;
            CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
            CU_ASSERT_STRING_EQUAL(body, "Hello, World!");
            hang_up(fd);
        }
    }
    CU_ASSERT_EQUAL(cancels_of(UG_CANCEL_BODY) + cancels_of(UG_CANCEL_CLIENT_GONE), 0);
    ts_stop(&sc);
}

/* A body far larger than anything buffered, written in small pieces; the handler pauses on
 * every piece. */
static void test_pause_resume(void) {
    start(5000);
    enum { TOTAL = 3 << 20 };
    char *data = malloc(TOTAL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    tu_srand(7);
    for (size_t i = 0; i < TOTAL; i++) data[i] = (char)tu_rand();
    for (int chunked = 0; chunked < 2; chunked++) {
        int fd = connect_nodelay();
        char head[256];
        int n = chunked ? snprintf(head, sizeof head,
                                   "POST /b/pause HTTP/1.1\r\nHost: t\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n")
                        : snprintf(head, sizeof head,
                                   "POST /b/pause HTTP/1.1\r\nHost: t\r\n"
                                   "Content-Length: %d\r\n\r\n",
                                   TOTAL);
        CU_ASSERT_EQUAL(tu_send_all(fd, head, (size_t)n), 0);
        for (size_t off = 0; off < TOTAL;) {
            size_t k = 65536 + off % 7777;
            if (k > TOTAL - off) k = TOTAL - off;
            if (chunked) {
                n = snprintf(head, sizeof head, "%zx\r\n", k);
                CU_ASSERT_EQUAL_FATAL(tu_send_all(fd, head, (size_t)n), 0);
            }
            CU_ASSERT_EQUAL_FATAL(tu_send_all(fd, data + off, k), 0);
            if (chunked) CU_ASSERT_EQUAL_FATAL(tu_send_all(fd, "\r\n", 2), 0);
            off += k;
        }
        if (chunked) CU_ASSERT_EQUAL(tu_send_all(fd, "0\r\nX-T: end\r\n\r\n", 15), 0);
        char body[256];
        CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
        want_sum(body, data, TOTAL, chunked ? "end" : "-");
        hang_up(fd);
    }
    pthread_mutex_lock(&mu);
    CU_ASSERT(pauses > 2);
    pthread_mutex_unlock(&mu);
    free(data);
    ts_stop(&sc);
}

static void test_limits_and_continue(void) {
    start(5000);
    char body[256];
    const char *h;
    /* A declared length over the route's limit: 413 at once, no 100, the body never sent. */
    int fd = connect_nodelay();
    static const char big[] = "POST /b/sum HTTP/1.1\r\nHost: t\r\nContent-Length: 1048577\r\n"
                              "Expect: 100-continue\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, big, sizeof big - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &h), 413);
    CU_ASSERT(strstr(h, "Connection: close") != NULL);
    hang_up(fd);
    /* Chunked past the limit: 413 mid-stream, and the handler's cancel callback. */
    fd = connect_nodelay();
    static const char ch[] =
        "POST /b/sum HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, ch, sizeof ch - 1), 0);
    static char piece[65536 + 16];
    int pn = snprintf(piece, sizeof piece, "10000\r\n");
    memset(piece + pn, 'p', 65536);
    memcpy(piece + pn + 65536, "\r\n", 2);
    int st = 0;
    for (int i = 0; i < 40; i++)
        if (tu_send_all(fd, piece, (size_t)pn + 65538)) break;
    st = tu_read_response(fd, body, sizeof body, NULL);
    CU_ASSERT_EQUAL(st, 413);
    hang_up(fd);
    for (int i = 0; i < 100 && !cancels_of(UG_CANCEL_BODY); i++) usleep(10000);
    CU_ASSERT_EQUAL(cancels_of(UG_CANCEL_BODY), 1);
    /* Expect: 100-continue on a route that reads: 100 first, then the answer. */
    fd = connect_nodelay();
    static const char ex[] = "POST /b/sum HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                             "Expect: 100-continue\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, ex, sizeof ex - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 100);
    CU_ASSERT_EQUAL(tu_send_all(fd, "12345", 5), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &h), 200);
    want_sum(body, "12345", 5, "-");
    CU_ASSERT(strstr(h, "Connection: close") == NULL);
    hang_up(fd);
    /* ... and on one whose middleware refuses: no 100, the refusal, then the close. */
    fd = connect_nodelay();
    static const char ex2[] = "POST /b/auth HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                              "Expect: 100-continue\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, ex2, sizeof ex2 - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &h), 401);
    CU_ASSERT(strstr(h, "Connection: close") != NULL);
    CU_ASSERT(tu_wait_eof(fd, 2000));
    hang_up(fd);
    /* An answer before the body's end closes after it. */
    fd = connect_nodelay();
    static const char early[] =
        "POST /b/early HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab";
    CU_ASSERT_EQUAL(tu_send_all(fd, early, sizeof early - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &h), 200);
    CU_ASSERT(strstr(h, "Connection: close") != NULL);
    CU_ASSERT(tu_wait_eof(fd, 2000));
    hang_up(fd);
    /* A streamed route with no body: one (0, end) piece. Keep-alive holds. */
    fd = connect_nodelay();
    static const char none[] = "POST /b/sum HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
                               "POST /b/early HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, none, sizeof none - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &h), 200);
    want_sum(body, "", 0, "-");
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &h), 200);
    CU_ASSERT(strstr(h, "Connection: close") == NULL);
    hang_up(fd);
    /* A buffered route's own limit, above the server's 1000. */
    fd = connect_nodelay();
    static char buf_req[4096];
    int n = snprintf(buf_req, sizeof buf_req,
                     "POST /b/buffered HTTP/1.1\r\nHost: t\r\nContent-Length: 1500\r\n\r\n");
    memset(buf_req + n, 'q', 1500);
    CU_ASSERT_EQUAL(tu_send_all(fd, buf_req, (size_t)n + 1500), 0);
    static char big_body[2048];
    CU_ASSERT_EQUAL(tu_read_response(fd, big_body, sizeof big_body, NULL), 200);
    CU_ASSERT_EQUAL(strlen(big_body), 1500);
    n = snprintf(buf_req, sizeof buf_req,
                 "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1500\r\n\r\n");
    CU_ASSERT_EQUAL(tu_send_all(fd, buf_req, (size_t)n), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, big_body, sizeof big_body, NULL), 413);
    hang_up(fd);
    ts_stop(&sc);
}

static void test_gone_and_timeout(void) {
    start(300);
    /* The client goes away mid-body. */
    int fd = connect_nodelay();
    static const char part[] = "POST /b/sum HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc";
    CU_ASSERT_EQUAL(tu_send_all(fd, part, sizeof part - 1), 0);
    usleep(50000);
    hang_up(fd);
    for (int i = 0; i < 100 && !cancels_of(UG_CANCEL_CLIENT_GONE); i++) usleep(10000);
    CU_ASSERT_EQUAL(cancels_of(UG_CANCEL_CLIENT_GONE), 1);
    /* A whole upload and the client's FIN at once: the body is handed out, then answered. */
    fd = connect_nodelay();
    static const char whole[] = "POST /b/sum HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello";
    CU_ASSERT_EQUAL(tu_send_all(fd, whole, sizeof whole - 1), 0);
    shutdown(fd, SHUT_WR);
    char hb[256];
    CU_ASSERT_EQUAL(tu_read_response(fd, hb, sizeof hb, NULL), 200);
    want_sum(hb, "hello", 5, "-");
    hang_up(fd);
    /* Half the body and the FIN: gone, once the half is handed out. */
    fd = connect_nodelay();
    CU_ASSERT_EQUAL(tu_send_all(fd, part, sizeof part - 1), 0);
    shutdown(fd, SHUT_WR);
    CU_ASSERT(tu_wait_eof(fd, 2000));
    hang_up(fd);
    for (int i = 0; i < 100 && cancels_of(UG_CANCEL_CLIENT_GONE) < 2; i++) usleep(10000);
    CU_ASSERT_EQUAL(cancels_of(UG_CANCEL_CLIENT_GONE), 2);
    /* The body timeout runs between pieces: pieces every 100 ms go on past it... */
    fd = connect_nodelay();
    CU_ASSERT_EQUAL(tu_send_all(fd, part, sizeof part - 1), 0);
    char rest[97];
    memset(rest, 'r', sizeof rest);
    for (int i = 0; i < 97; i += 10) {
        usleep(100000);
        CU_ASSERT_EQUAL(tu_send_all(fd, rest + i, i + 10 <= 97 ? 10 : 97 - (size_t)i), 0);
    }
    char body[256], all[101];
    memcpy(all, "abc", 3);
    memcpy(all + 3, rest, 97);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
    want_sum(body, all, 100, "-");
    /* ... and a gap longer than it is a 408, and a cancel. */
    CU_ASSERT_EQUAL(tu_send_all(fd, part, sizeof part - 1), 0);
    uint64_t t0 = tu_now_ms();
    const char *h;
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &h), 408);
    CU_ASSERT(tu_now_ms() - t0 >= 250);
    CU_ASSERT(strstr(h, "Connection: close") != NULL);
    hang_up(fd);
    for (int i = 0; i < 100 && !cancels_of(UG_CANCEL_TIMEOUT); i++) usleep(10000);
    CU_ASSERT_EQUAL(cancels_of(UG_CANCEL_TIMEOUT), 1);
    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.stats.timeouts_body, 1);
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("body", NULL, NULL);
    CU_add_test(s, "split at every byte boundary, chunked and Content-Length",
                test_split_everywhere);
    CU_add_test(s, "pause and resume, 3 MiB in constant memory", test_pause_resume);
    CU_add_test(s, "limits, 100-continue, answering early", test_limits_and_continue);
    CU_add_test(s, "client gone mid-body, the body timeout between pieces", test_gone_and_timeout);
}

int main(int argc, char **argv) {
    ts_init(argc, argv);
    return tu_main(register_suites, 170);
}
