/* End-to-end tests over loopback with real sockets. One body, run once per backend:
 * `test_e2e uring` and `test_e2e epoll` (CTest runs both). */
#include "testserver.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <ugate.h>
#include <unistd.h>

static const char GET_ROOT[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";

/* ------------------------------------------------------------------ tests */

static void test_keepalive(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    char body[256];
    const char *hdrs;
    for (int i = 0; i < 50; i++) {
        CU_ASSERT_EQUAL(tu_send_all(fd, GET_ROOT, sizeof GET_ROOT - 1), 0);
        CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 200);
        CU_ASSERT_STRING_EQUAL(body, "Hello, World!");
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(hdrs, "Date: "));
    CU_ASSERT_PTR_NOT_NULL(strstr(hdrs, "Content-Length: 13\r\n"));
    CU_ASSERT_PTR_NULL(strstr(hdrs, "Connection: close"));
    /* HTTP/1.0 keep-alive, then HTTP/1.0 without: closed after the response. */
    const char r10ka[] = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, r10ka, sizeof r10ka - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(hdrs, "Connection: keep-alive"));
    const char r10[] = "GET / HTTP/1.0\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, r10, sizeof r10 - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(hdrs, "Connection: close"));
    CU_ASSERT_EQUAL(tu_wait_eof(fd, 2000), 1);
    tu_forget(fd);
    close(fd);
    ts_stop(&sc);
}

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* Every descriptor the server took is closed by the time ug_server_free returns: those of
 * connections closed politely, closed by the client, closed by the server, and the server's
 * own. */
static void test_no_fd_left(void) {
    int before = open_fds();
    srv_ctx sc;
    ts_start(&sc, NULL);
    char body[64];
    static const char close_req[] = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    for (int i = 0; i < 200; i++) {
        int fd = tu_connect(sc.port);
        CU_ASSERT_FATAL(fd >= 0);
        if (i % 2) {
            CU_ASSERT_EQUAL(tu_send_all(fd, close_req, sizeof close_req - 1), 0);
            CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
            CU_ASSERT_EQUAL(tu_wait_eof(fd, 2000), 1);
        } else {
            CU_ASSERT_EQUAL(tu_send_all(fd, GET_ROOT, sizeof GET_ROOT - 1), 0);
            CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
        }
        tu_forget(fd);
        close(fd);
    }
    ts_stop(&sc);
    CU_ASSERT_EQUAL(open_fds(), before);
}

static void test_pipeline_100(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    static char batch[100 * 64];
    size_t n = 0;
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(batch + n, sizeof batch - n,
                              "GET /path/%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    CU_ASSERT_EQUAL(tu_send_all(fd, batch, n), 0);
    for (int i = 0; i < 100; i++) {
        char body[64], want[64];
        snprintf(want, sizeof want, "/path/%d", i);
        CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
        CU_ASSERT_STRING_EQUAL(body, want);
    }
    tu_forget(fd);
    close(fd);
    ts_stop(&sc);
}

static void test_concurrent_1000(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    enum { N = 1000 };
    static int fds[N];
    int ok = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = tu_connect(sc.port);
        if (fds[i] < 0) fprintf(stderr, "connect %d: %s\n", i, strerror(errno));
        CU_ASSERT(fds[i] >= 0);
    }
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0) tu_send_all(fds[i], GET_ROOT, sizeof GET_ROOT - 1);
    for (int i = 0; i < N; i++) {
        char body[64];
        if (fds[i] >= 0 && tu_read_response(fds[i], body, sizeof body, NULL) == 200 &&
            !strcmp(body, "Hello, World!"))
            ok++;
    }
    CU_ASSERT_EQUAL(ok, N);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0) {
            tu_forget(fds[i]);
            close(fds[i]);
        }
    ts_stop(&sc);
}

/* Each bad input gets its status and a closed connection, while another client keeps being
 * served on a keep-alive connection in between. */
static void test_bad_inputs(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    static char longuri[6000], bighdr[9000];
    memcpy(longuri, "GET /", 5);
    memset(longuri + 5, 'a', 4500);
    strcpy(longuri + 4505, " HTTP/1.1\r\nHost: t\r\n\r\n");
    strcpy(bighdr, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: ");
    size_t bl = strlen(bighdr);
    memset(bighdr + bl, 'b', 8500);
    strcpy(bighdr + bl + 8500, "\r\n\r\n");
    struct {
        const char *req;
        int status;
    } cases[] = {
        {"GET / HTTX/1.1\r\nHost: t\r\n\r\n", 400},
        {"BREW / HTTP/1.1\r\nHost: t\r\n\r\n", 501},
        {"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", 400},
        {longuri, 414},
        {bighdr, 431},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n", 413},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
        {"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: "
         "chunked\r\n\r\n0\r\n\r\n",
         400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
         400},
        {"GET / HTTP/1.1\r\n\r\n", 400},                       /* no Host */
        {"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400}, /* two */
        {"GET / HTTP/1.1\r\nHost:\r\n t\r\n\r\n", 400},        /* obs-fold */
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
         "2;\nxx\r\n45\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
         400}, /* a chunk-size line ended by a bare LF */
    };
    int good = tu_connect(sc.port);
    CU_ASSERT_FATAL(good >= 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = tu_connect(sc.port);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_EQUAL(tu_send_all(fd, cases[i].req, strlen(cases[i].req)), 0);
        const char *hdrs = NULL;
        int st = tu_read_response(fd, NULL, 0, &hdrs);
        if (st != cases[i].status)
            fprintf(stderr, "case %zu: got %d want %d\n", i, st, cases[i].status);
        CU_ASSERT_EQUAL(st, cases[i].status);
        if (hdrs) CU_ASSERT_PTR_NOT_NULL(strstr(hdrs, "Connection: close"));
        CU_ASSERT_EQUAL(tu_wait_eof(fd, 3000), 1);
        tu_forget(fd);
        close(fd);
        char body[64];
        CU_ASSERT_EQUAL(tu_send_all(good, GET_ROOT, sizeof GET_ROOT - 1), 0);
        CU_ASSERT_EQUAL(tu_read_response(good, body, sizeof body, NULL), 200);
    }
    tu_forget(good);
    close(good);
    ts_stop(&sc);
}

static void test_echo_and_continue(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    char body[128];
    const char chunked[] = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, chunked, sizeof chunked - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
    CU_ASSERT_STRING_EQUAL(body, "hello world");
    const char expect[] =
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, expect, sizeof expect - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, NULL, 0, NULL), 100);
    CU_ASSERT_EQUAL(tu_send_all(fd, "ping", 4), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
    CU_ASSERT_STRING_EQUAL(body, "ping");
    const char head[] = "HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, head, sizeof head - 1), 0);
    const char *hdrs;
    /* HEAD: Content-Length 13 but no body; the next response must parse cleanly. */
    int fd_head_status;
    {
        /* read the HEAD response header block by hand: tu_read_response would wait for 13 */
        char buf[1024];
        size_t got = 0;
        char *end = NULL;
        while (!end && got < sizeof buf - 1) {
            ssize_t r = tu_recv(fd, buf + got, 1, 0);
            if (r <= 0) break;
            got += (size_t)r;
            buf[got] = 0;
            end = strstr(buf, "\r\n\r\n");
        }
        fd_head_status = end ? atoi(buf + 9) : -1;
        CU_ASSERT_PTR_NOT_NULL(strstr(buf, "Content-Length: 13"));
    }
    CU_ASSERT_EQUAL(fd_head_status, 200);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 200);
    CU_ASSERT_STRING_EQUAL(body, "Hello, World!");
    tu_forget(fd);
    close(fd);
    ts_stop(&sc);
}

static void test_late_and_forgotten(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    char body[64];
    uint64_t t0 = tu_now_ms();
    const char late[] =
        "GET /late?ms=100 HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, late, sizeof late - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
    CU_ASSERT_STRING_EQUAL(body, "late");
    CU_ASSERT(tu_now_ms() - t0 >= 95);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200); /* pipelined after */
    CU_ASSERT_STRING_EQUAL(body, "Hello, World!");
    const char forget[] = "GET /forget HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, forget, sizeof forget - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 500);
    tu_forget(fd);
    close(fd);
    /* the client that goes away while its request waits: the cancel callback fires */
    fd = tu_connect(sc.port);
    const char late2[] = "GET /late?ms=3000 HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, late2, sizeof late2 - 1), 0);
    usleep(100 * 1000);
    close(fd);
    for (int i = 0; i < 200 && !__atomic_load_n(&sc.cancelled, __ATOMIC_SEQ_CST); i++)
        usleep(10 * 1000);
    CU_ASSERT_EQUAL(__atomic_load_n(&sc.cancelled, __ATOMIC_SEQ_CST), 1);
    CU_ASSERT_EQUAL(__atomic_load_n(&sc.last_reason, __ATOMIC_SEQ_CST), UG_CANCEL_CLIENT_GONE);
    ts_stop(&sc);
}

/* A client that resets mid-response must not disturb the server or other clients. */
static void test_reset_mid_response(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    for (int round = 0; round < 5; round++) {
        int fd = tu_connect(sc.port);
        CU_ASSERT_FATAL(fd >= 0);
        int small = 4096;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        const char big[] = "GET /big HTTP/1.1\r\nHost: t\r\n\r\n";
        CU_ASSERT_EQUAL(tu_send_all(fd, big, sizeof big - 1), 0);
        char tmp[1000];
        CU_ASSERT(tu_recv(fd, tmp, sizeof tmp, 0) > 0);
        struct linger lg = {1, 0}; /* close with RST */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    int fd = tu_connect(sc.port);
    char body[64];
    CU_ASSERT_EQUAL(tu_send_all(fd, GET_ROOT, sizeof GET_ROOT - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
    tu_forget(fd);
    close(fd);
    ts_stop(&sc);
}

/* Shutdown with a slow request in flight: it completes, then run returns 0; connects after
 * the gate closed are refused. */
static void test_shutdown_drains(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int fd = tu_connect(sc.port);
    const char late[] = "GET /late?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, late, sizeof late - 1), 0);
    usleep(50 * 1000);
    ug_shutdown_opts o = {.drain_timeout_ms = 5000};
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0); /* repeated: harmless */
    usleep(50 * 1000);
    CU_ASSERT_EQUAL(tu_connect(sc.port), -1);
    CU_ASSERT_EQUAL(errno, ECONNREFUSED);
    char body[64];
    const char *hdrs;
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 200);
    CU_ASSERT_STRING_EQUAL(body, "late");
    CU_ASSERT_PTR_NOT_NULL(strstr(hdrs, "Connection: close"));
    CU_ASSERT_EQUAL(tu_wait_eof(fd, 3000), 1);
    tu_forget(fd);
    close(fd);
    ts_join(&sc);
    CU_ASSERT_EQUAL(sc.run_rc, 0);
    CU_ASSERT_EQUAL(sc.report.requests_drained, 1);
    CU_ASSERT_EQUAL(sc.report.accepted_after_close, 0);
    CU_ASSERT_EQUAL(sc.report.conns_forced, 0);
    ug_server_free(sc.srv);
}

/* With several loops every loop serves its share, a request's loop is where its post runs,
 * and ids of loops that do not exist are refused. */
static void test_loops_share(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    unsigned n = ug_server_loops(sc.srv);
    CU_ASSERT_EQUAL(n, g_threads);
    enum { CONNS = 40 };
    int fds[CONNS];
    for (int i = 0; i < CONNS; i++) {
        fds[i] = tu_connect(sc.port);
        CU_ASSERT_FATAL(fds[i] >= 0);
        char body[64];
        CU_ASSERT_EQUAL(tu_send_all(fds[i], GET_ROOT, sizeof GET_ROOT - 1), 0);
        CU_ASSERT_EQUAL(tu_read_response(fds[i], body, sizeof body, NULL), 200);
    }
    for (unsigned l = 0; l < n; l++) {
        ug_stats ls;
        CU_ASSERT_EQUAL(ug_server_loop_stats(sc.srv, l, &ls), 0);
        /* The fewest-connections hand-off spreads 40 open connections evenly. */
        CU_ASSERT(ls.conns_open >= CONNS / n - 1);
        CU_ASSERT(ls.requests >= CONNS / n - 1);
    }
    ug_stats ls;
    CU_ASSERT_EQUAL(ug_server_loop_stats(sc.srv, n, &ls), -EINVAL);
    uint64_t bogus = (uint64_t)(UG_MAX_LOOPS - 1) << 28;
    CU_ASSERT_EQUAL(ug_req_post(sc.srv, bogus, NULL, NULL), -EINVAL);
    for (int i = 0; i < CONNS; i++) {
        tu_forget(fds[i]);
        close(fds[i]);
    }
    ts_stop(&sc);
}

static void register_suites(void) {
    const char *name = g_backend == UG_BACKEND_URING ? "e2e-uring" : "e2e-epoll";
    CU_pSuite s = CU_add_suite(name, NULL, NULL);
    CU_add_test(s, "keep-alive", test_keepalive);
    CU_add_test(s, "no descriptor left after the server is freed", test_no_fd_left);
    CU_add_test(s, "100 pipelined in order", test_pipeline_100);
    CU_add_test(s, "1000 concurrent connections", test_concurrent_1000);
    CU_add_test(s, "bad inputs, others unaffected", test_bad_inputs);
    CU_add_test(s, "echo, chunked, 100-continue, HEAD", test_echo_and_continue);
    CU_add_test(s, "late response, forgotten response, cancel", test_late_and_forgotten);
    CU_add_test(s, "client resets mid-response", test_reset_mid_response);
    CU_add_test(s, "shutdown drains a slow request", test_shutdown_drains);
    CU_add_test(s, "the loops share the connections", test_loops_share);
}

int main(int argc, char **argv) {
    ts_init(argc, argv);
    return tu_main(register_suites, 240);
}
