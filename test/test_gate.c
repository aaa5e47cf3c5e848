/* The accept gate and graceful shutdown, end to end over loopback, on both backends
 * (`test_gate uring`, `test_gate epoll`). */
#include "testserver.h"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char GET_ROOT[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";

/* ------------------------------------------------------------------ load clients */

enum client_kind { KEEPALIVE, PER_REQUEST, SLOW };

typedef struct client {
    pthread_t thr;
    enum client_kind kind;
    uint16_t port;
    unsigned seed;
    int *stop; /* read with __atomic_load_n: the clients are threads */
    /* results */
    int completed, refused, lost, other_err;
} client;

/* 1 when the peer has closed the connection (EOF visible without blocking). */
static int peer_closed(int fd) {
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void *client_main(void *arg) {
    client *cl = arg;
    int fd = -1;
    uint64_t end = tu_now_ms() + 8000; /* hard bound */
    while (!__atomic_load_n(cl->stop, __ATOMIC_RELAXED) && tu_now_ms() < end) {
        if (fd >= 0 && peer_closed(fd)) { /* closed before we wrote: nothing lost */
            tu_forget(fd);
            close(fd);
            fd = -1;
        }
        if (fd < 0) {
            fd = tu_connect(cl->port);
            if (fd < 0) {
                if (errno == ECONNREFUSED) {
                    cl->refused++;
                    break; /* the gate is closed: done */
                }
                cl->other_err++;
                usleep(1000);
                continue;
            }
        }
        const char *req = GET_ROOT;
        size_t len = sizeof GET_ROOT - 1;
        static const char slow[] = "GET /late?ms=150 HTTP/1.1\r\nHost: t\r\n\r\n";
        if (cl->kind == SLOW) req = slow, len = sizeof slow - 1;
        if (tu_send_all(fd, req, len) < 0) { /* not delivered: a client may retry */
            tu_forget(fd);
            close(fd);
            fd = -1;
            continue;
        }
        const char *hdrs = NULL;
        char body[64];
        int st = tu_read_response(fd, body, sizeof body, &hdrs);
        if (st == 200) {
            cl->completed++;
        } else {
            cl->lost++;
            fprintf(stderr, "client kind %d: request written, status %d\n", cl->kind, st);
        }
        if (st != 200 || cl->kind == PER_REQUEST || strstr(hdrs, "Connection: close")) {
            tu_forget(fd);
            close(fd);
            fd = -1;
        }
        if (cl->kind == KEEPALIVE) usleep((unsigned)(rand_r(&cl->seed) % 20000));
    }
    if (fd >= 0) {
        tu_forget(fd);
        close(fd);
    }
    return NULL;
}

/* Mixed load, shutdown mid-load, every written request must be answered. */
static void shutdown_under_load(int rounds) {
    for (int r = 0; r < rounds; r++) {
        srv_ctx sc;
        ts_start(&sc, NULL);
        int stop = 0;
        enum { NCL = 10 };
        client cl[NCL];
        for (int i = 0; i < NCL; i++) {
            memset(&cl[i], 0, sizeof cl[i]);
            cl[i].kind = i < 5 ? KEEPALIVE : i < 8 ? PER_REQUEST : SLOW;
            cl[i].port = sc.port;
            cl[i].seed = (unsigned)(r * 100 + i);
            cl[i].stop = &stop;
            pthread_create(&cl[i].thr, NULL, client_main, &cl[i]);
        }
        usleep(120 * 1000);
        ug_shutdown_opts o = {.drain_timeout_ms = 5000};
        CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
        ts_join(&sc);
        __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
        int completed = 0, lost = 0, refused = 0;
        for (int i = 0; i < NCL; i++) {
            pthread_join(cl[i].thr, NULL);
            completed += cl[i].completed;
            lost += cl[i].lost;
            refused += cl[i].refused;
        }
        CU_ASSERT_EQUAL(lost, 0);
        CU_ASSERT(completed > 0);
        CU_ASSERT_EQUAL(sc.run_rc, 0);
        CU_ASSERT_EQUAL(sc.report.accepted_after_close, 0);
        CU_ASSERT_EQUAL(sc.report.conns_forced, 0);
        if (lost || sc.run_rc)
            fprintf(stderr, "round %d: completed %d lost %d refused %d rc %d\n", r, completed, lost,
                    refused, sc.run_rc);
        ug_server_free(sc.srv);
    }
}

static void test_shutdown_under_load_20(void) {
    shutdown_under_load(20);
}

/* ------------------------------------------------------------------ racing the cancel */

static void test_connects_racing_the_gate(void) {
    for (int r = 0; r < 5; r++) {
        srv_ctx sc;
        ts_start(&sc, NULL);
        int stop = 0;
        enum { NCL = 6 };
        client cl[NCL];
        for (int i = 0; i < NCL; i++) {
            memset(&cl[i], 0, sizeof cl[i]);
            cl[i].kind = PER_REQUEST;
            cl[i].port = sc.port;
            cl[i].stop = &stop;
            pthread_create(&cl[i].thr, NULL, client_main, &cl[i]);
        }
        usleep(50 * 1000);
        CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, NULL), 0);
        ts_join(&sc);
        int lost = 0, refused = 0;
        for (int i = 0; i < NCL; i++) {
            pthread_join(cl[i].thr, NULL);
            lost += cl[i].lost;
            refused += cl[i].refused;
        }
        CU_ASSERT_EQUAL(lost, 0);
        CU_ASSERT_EQUAL(refused, NCL); /* every client ends refused: the gate closed */
        CU_ASSERT_EQUAL(sc.report.accepted_after_close, 0);
        CU_ASSERT_EQUAL(sc.run_rc, 0);
        ug_server_free(sc.srv);
    }
}

/* ------------------------------------------------------------------ shutdown requests */

typedef struct {
    ug_server *srv;
    int rc;
} sd_arg;

static void *shutdown_thread(void *arg) {
    sd_arg *a = arg;
    a->rc = ug_server_shutdown(a->srv, NULL);
    return NULL;
}

static void test_concurrent_repeated_shutdown(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    enum { N = 8 };
    pthread_t t[N];
    sd_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i].srv = sc.srv;
        pthread_create(&t[i], NULL, shutdown_thread, &a[i]);
    }
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    ts_join(&sc);
    for (int i = 0; i < N; i++) CU_ASSERT(a[i].rc == 0 || a[i].rc == -ESHUTDOWN);
    CU_ASSERT_EQUAL(sc.run_rc, 0);
    CU_ASSERT_EQUAL(ug_server_state(sc.srv), UG_GATE_CLOSED);
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, NULL), -ESHUTDOWN);
    ug_server_free(sc.srv);
}

static void test_exit_fast_without_connections(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    usleep(20 * 1000);
    uint64_t t0 = tu_now_ms();
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, NULL), 0);
    ts_join(&sc);
    uint64_t took = tu_now_ms() - t0;
    CU_ASSERT(took < 100); /* the target (10 ms) is measured by the probe, not here */
    CU_ASSERT_EQUAL(sc.run_rc, 0);
    CU_ASSERT_EQUAL(tu_connect(sc.port), -1);
    CU_ASSERT_EQUAL(errno, ECONNREFUSED);
    ug_server_free(sc.srv);
}

static void test_immediate(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int fd = tu_connect(sc.port);
    const char late[] = "GET /late?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, late, sizeof late - 1), 0);
    usleep(50 * 1000);
    uint64_t t0 = tu_now_ms();
    ug_shutdown_opts o = {.immediate = 1};
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    ts_join(&sc);
    CU_ASSERT(tu_now_ms() - t0 < 500);
    CU_ASSERT_EQUAL(sc.run_rc, 1);
    CU_ASSERT_EQUAL(sc.cancelled, 1);
    CU_ASSERT_EQUAL(sc.last_reason, UG_CANCEL_DEADLINE);
    CU_ASSERT_EQUAL(tu_wait_eof(fd, 1000), 1);
    close(fd);
    ug_server_free(sc.srv);
}

/* Graceful first, then immediate (the second SIGINT of ugate-serve). */
static void test_graceful_then_immediate(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int fd = tu_connect(sc.port);
    const char late[] = "GET /late?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, late, sizeof late - 1), 0);
    usleep(50 * 1000);
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, NULL), 0);
    usleep(50 * 1000);
    CU_ASSERT_EQUAL(ug_server_state(sc.srv), UG_GATE_DRAINING);
    ug_shutdown_opts o = {.immediate = 1};
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    ts_join(&sc);
    CU_ASSERT_EQUAL(sc.run_rc, 1);
    CU_ASSERT_EQUAL(sc.report.requests_forced, 1);
    close(fd);
    ug_server_free(sc.srv);
}

/* The deadline forces the close within 50 ms of it and fires the cancel callbacks. */
static void test_deadline_precision(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = tu_connect(sc.port);
        const char late[] = "GET /late?ms=10000 HTTP/1.1\r\nHost: t\r\n\r\n";
        CU_ASSERT_EQUAL(tu_send_all(fds[i], late, sizeof late - 1), 0);
    }
    usleep(50 * 1000);
    ug_shutdown_opts o = {.drain_timeout_ms = 150};
    uint64_t t0 = tu_now_ms();
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    ts_join(&sc);
    uint64_t took = tu_now_ms() - t0;
    CU_ASSERT(took >= 145);
    CU_ASSERT(took < 150 + 50);
    CU_ASSERT_EQUAL(sc.run_rc, 1);
    CU_ASSERT_EQUAL(sc.cancelled, 3);
    CU_ASSERT_EQUAL(sc.report.requests_forced, 3);
    CU_ASSERT_EQUAL(sc.report.conns_forced, 3);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(tu_wait_eof(fds[i], 1000), 1);
        close(fds[i]);
    }
    ug_server_free(sc.srv);
}

/* At the deadline, one log line per forced request: method, target, age, state, connection
 * and loop (the answer to "what did the drain wait for"). Idle connections are not listed. */
static pthread_mutex_t forced_lock = PTHREAD_MUTEX_INITIALIZER;
static char forced_lines[8][512];
static int forced_n;
static void capture_forced(void *user, ug_log_level level, const char *msg) {
    (void)user;
    (void)level;
    if (!strstr(msg, ": forced ")) return;
    pthread_mutex_lock(&forced_lock);
    if (forced_n < 8) snprintf(forced_lines[forced_n], sizeof forced_lines[0], "%s", msg);
    forced_n++;
    pthread_mutex_unlock(&forced_lock);
}

static void test_deadline_logs_forced_requests(void) {
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.log = capture_forced;
    forced_n = 0;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = tu_connect(sc.port);
        CU_ASSERT_FATAL(fds[i] >= 0);
        char req[128];
        int n = snprintf(req, sizeof req, "GET /late?ms=10000&n=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        if (i < 3) CU_ASSERT_EQUAL(tu_send_all(fds[i], req, (size_t)n), 0); /* the 4th idles */
    }
    usleep(100 * 1000);
    ug_shutdown_opts o = {.drain_timeout_ms = 200};
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    ts_join(&sc);
    CU_ASSERT_EQUAL(sc.report.requests_forced, 3);
    CU_ASSERT_EQUAL(forced_n, 3);
    for (int i = 0; i < 3; i++) {
        char want[64];
        snprintf(want, sizeof want, "GET /late?ms=10000&n=%d,", i);
        int found = 0;
        for (int k = 0; k < forced_n && k < 8; k++)
            if (strstr(forced_lines[k], want) &&
                strstr(forced_lines[k], "drain deadline: forced") &&
                strstr(forced_lines[k], "ms old, deferred, connection "))
                found = 1;
        CU_ASSERT(found);
        if (!found) fprintf(stderr, "\n    no forced line for %s\n", want);
    }
    for (int i = 0; i < 4; i++) close(fds[i]);
    ug_server_free(sc.srv);
}

/* ------------------------------------------------------------------ lame duck */

static void test_lame_duck(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    ug_shutdown_opts o = {.drain_delay_ms = 300, .drain_timeout_ms = 2000};
    uint64_t t0 = tu_now_ms();
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    usleep(30 * 1000);
    CU_ASSERT_EQUAL(ug_server_state(sc.srv), UG_GATE_LAME_DUCK);
    /* still accepting, but every response says close */
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(tu_send_all(fd, GET_ROOT, sizeof GET_ROOT - 1), 0);
    const char *hdrs = NULL;
    CU_ASSERT_EQUAL(tu_read_response(fd, NULL, 0, &hdrs), 200);
    CU_ASSERT_PTR_NOT_NULL(hdrs && strstr(hdrs, "Connection: close"));
    CU_ASSERT_EQUAL(tu_wait_eof(fd, 1000), 1);
    tu_forget(fd);
    close(fd);
    ts_join(&sc);
    CU_ASSERT(tu_now_ms() - t0 >= 295);
    CU_ASSERT_EQUAL(sc.run_rc, 0);
    CU_ASSERT(sc.report.lame_duck_us >= 290000);
    ug_server_free(sc.srv);
}

/* ------------------------------------------------------------------ hooks and holds */

typedef struct {
    int calls_draining, calls_lame;
    int take_hold;
} hook_state;

static void hook(ug_server *srv, ug_gate_state st, void *user) {
    hook_state *h = user;
    if (st == UG_GATE_DRAINING) h->calls_draining++;
    if (st == UG_GATE_LAME_DUCK) h->calls_lame++;
    if (st == UG_GATE_DRAINING && h->take_hold) CU_ASSERT_EQUAL(ug_server_hold(srv), 0);
}

static void release_post(ug_server *srv, void *user) {
    (void)user;
    CU_ASSERT_EQUAL(ug_server_release(srv), 0);
    CU_ASSERT_EQUAL(ug_server_release(srv), -EINVAL);
}

static void *release_later(void *arg) {
    usleep(200 * 1000);
    CU_ASSERT_EQUAL(ug_server_post(arg, release_post, NULL), 0);
    return NULL;
}

static void test_hook_holds_drain(void) {
    hook_state h = {.take_hold = 1};
    ug_config cfg;
    ug_config_init(&cfg);
    /* register before running: create by hand */
    ug_server *srv;
    cfg.port = 0;
    cfg.backend = g_backend;
    CU_ASSERT_EQUAL_FATAL(ug_server_create(&srv, &cfg), 0);
    CU_ASSERT_EQUAL(ug_server_on_shutdown(srv, hook, &h), 0);
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, NULL), 0); /* queued: applied once it runs */
    /* release the hold from another thread, through the loop, after ~200 ms */
    pthread_t poster;
    uint64_t t0 = tu_now_ms();
    pthread_create(&poster, NULL, release_later, srv);
    int rc = ug_server_run(srv, NULL);
    pthread_join(poster, NULL);
    uint64_t took = tu_now_ms() - t0;
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(h.calls_draining, 1);
    CU_ASSERT_EQUAL(h.calls_lame, 0);
    CU_ASSERT(took >= 190);
    ug_server_free(srv);

    /* a hold never released is dropped by the deadline */
    hook_state h2 = {.take_hold = 1};
    CU_ASSERT_EQUAL_FATAL(ug_server_create(&srv, &cfg), 0);
    CU_ASSERT_EQUAL(ug_server_on_shutdown(srv, hook, &h2), 0);
    ug_shutdown_opts o = {.drain_timeout_ms = 100};
    CU_ASSERT_EQUAL(ug_server_shutdown(srv, &o), 0);
    ug_report rep;
    CU_ASSERT_EQUAL(ug_server_run(srv, &rep), 1);
    CU_ASSERT_EQUAL(rep.holds_forced, 1);
    ug_server_free(srv);
}

/* ------------------------------------------------------------------ loop 0 ends first */

/* With two loops: one client on each, the one on loop 0 leaves, and the one on loop 1 waits
 * for a deferred answer that never comes. After a graceful shutdown loop 0 has nothing left
 * and ends at once, long before the deadline; what follows must not need it. */
static int loop1_deferred(srv_ctx *sc, int *fd_out) {
    int a = tu_connect(sc->port), b = tu_connect(sc->port);
    char body[64];
    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    CU_ASSERT_EQUAL(tu_send_all(a, GET_ROOT, sizeof GET_ROOT - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(a, body, sizeof body, NULL), 200);
    CU_ASSERT_EQUAL(tu_send_all(b, GET_ROOT, sizeof GET_ROOT - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(b, body, sizeof body, NULL), 200);
    tu_forget(a);
    close(a);
    const char wait_req[] = "GET /late-id HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(b, wait_req, sizeof wait_req - 1), 0);
    ug_stats l0, l1;
    for (int i = 0; i < 1000; i++) { /* a's close seen by loop 0, b's request by loop 1 */
        CU_ASSERT_EQUAL_FATAL(ug_server_loop_stats(sc->srv, 0, &l0), 0);
        CU_ASSERT_EQUAL_FATAL(ug_server_loop_stats(sc->srv, 1, &l1), 0);
        if (l0.conns_open == 0 && l1.inflight == 1) break;
        usleep(1000);
    }
    *fd_out = b;
    return l0.conns_open == 0 && l1.inflight == 1 && l1.conns_open == 1;
}

static int hold_rc = 1;
static void take_hold(ug_server *srv, void *user) {
    (void)user;
    hold_rc = ug_server_hold(srv);
}

static void test_loop0_ends_first(void) {
    if (g_threads < 2) {
        fprintf(stderr, "\n    (one loop: nothing to end first)\n");
        return;
    }
    /* A hold taken on loop 1 after loop 0 has ended is dropped by the deadline (loop 1's),
     * and the drain's duration is the last loop's. */
    srv_ctx sc;
    int fd;
    ts_start(&sc, NULL);
    CU_ASSERT_FATAL(loop1_deferred(&sc, &fd));
    ug_shutdown_opts o = {.drain_timeout_ms = 600};
    uint64_t t0 = tu_now_ms();
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    usleep(200 * 1000);
    CU_ASSERT_EQUAL(ts_on_loop_n(&sc, 1, take_hold, NULL), 0);
    CU_ASSERT_EQUAL(hold_rc, 0);
    ts_join(&sc);
    uint64_t took = tu_now_ms() - t0;
    CU_ASSERT(took >= 590 && took < 600 + 400);
    CU_ASSERT_EQUAL(sc.run_rc, 1);
    CU_ASSERT_EQUAL(sc.report.holds_forced, 1);
    CU_ASSERT_EQUAL(sc.report.requests_forced, 1);
    CU_ASSERT(sc.report.drain_us >= 590 * 1000 && sc.report.drain_us < (600 + 400) * 1000);
    CU_ASSERT_EQUAL(ug_server_hold(sc.srv), -ESHUTDOWN);
    tu_forget(fd);
    close(fd);
    ug_server_free(sc.srv);

    /* An immediate shutdown after loop 0 has ended still forces loop 1 at once. */
    ts_start(&sc, NULL);
    CU_ASSERT_FATAL(loop1_deferred(&sc, &fd));
    ug_shutdown_opts slow = {.drain_timeout_ms = 5000}, now = {.immediate = 1};
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &slow), 0);
    usleep(200 * 1000);
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &now), 0);
    ts_join(&sc);
    took = tu_now_ms() - t0;
    CU_ASSERT(took < 1500);
    CU_ASSERT_EQUAL(sc.run_rc, 1);
    CU_ASSERT_EQUAL(sc.report.requests_forced, 1);
    CU_ASSERT_EQUAL(tu_wait_eof(fd, 1000), 1);
    tu_forget(fd);
    close(fd);
    ug_server_free(sc.srv);
}

/* An immediate shutdown that arrives while loop 0 is closing the gate (after it read the
 * graceful request, before it published DRAINING) is seen neither by its caller (the gate
 * is not DRAINING yet) nor in that turn by loop 0, which, with nothing open and the
 * listener closed in the same turn (paused at max_conns, no settle), used to end then and
 * leave loop 1 to wait for the graceful deadline. The log sink makes the call at the exact
 * point: "gate closing" is logged inside that window. */
static ug_server *imm_srv;
static int imm_rc = 1;
static void log_and_stop_now(void *user, ug_log_level level, const char *msg) {
    (void)user;
    (void)level;
    if (strstr(msg, "gate closing") && imm_srv) {
        ug_shutdown_opts now = {.immediate = 1};
        imm_rc = ug_server_shutdown(imm_srv, &now);
    }
}

static void test_immediate_while_closing(void) {
    if (g_threads < 2) {
        fprintf(stderr, "\n    (one loop: nothing to end first)\n");
        return;
    }
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.max_conns = 1; /* one connection pauses the accept */
    cfg.gate_settle_ms = 0;
    cfg.log = log_and_stop_now;
    srv_ctx sc;
    imm_srv = NULL;
    ts_start(&sc, &cfg);
    /* The first connection goes to loop 0: it pauses the accept, and closing it resumes it;
     * the second goes to loop 1 and pauses it again, with loop 0 left with nothing. */
    int a = tu_connect(sc.port);
    char body[64];
    CU_ASSERT_FATAL(a >= 0);
    CU_ASSERT_EQUAL(tu_send_all(a, GET_ROOT, sizeof GET_ROOT - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(a, body, sizeof body, NULL), 200);
    tu_forget(a);
    close(a);
    ug_stats l0, l1;
    for (int i = 0; i < 1000; i++) {
        CU_ASSERT_EQUAL_FATAL(ug_server_loop_stats(sc.srv, 0, &l0), 0);
        if (l0.conns_open == 0 && l0.accept_resumes >= 1) break;
        usleep(1000);
    }
    int b = tu_connect(sc.port);
    CU_ASSERT_FATAL(b >= 0);
    const char wait_req[] = "GET /late-id HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(b, wait_req, sizeof wait_req - 1), 0);
    for (int i = 0; i < 1000; i++) {
        CU_ASSERT_EQUAL_FATAL(ug_server_loop_stats(sc.srv, 1, &l1), 0);
        if (l1.inflight == 1) break;
        usleep(1000);
    }
    CU_ASSERT_EQUAL_FATAL(l1.inflight, 1);
    imm_srv = sc.srv;
    imm_rc = 1;
    ug_shutdown_opts slow = {.drain_timeout_ms = 5000};
    uint64_t t0 = tu_now_ms();
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &slow), 0);
    ts_join(&sc);
    uint64_t took = tu_now_ms() - t0;
    CU_ASSERT_EQUAL(imm_rc, 0);
    CU_ASSERT(took < 1500);
    CU_ASSERT_EQUAL(sc.run_rc, 1);
    CU_ASSERT_EQUAL(sc.report.requests_forced, 1);
    imm_srv = NULL;
    tu_forget(b);
    close(b);
    ug_server_free(sc.srv);
}

/* Posted work that hands a hold over (releases one, posts work that takes another) while the
 * loop is about to end: the new hold is waited for, until the deadline drops it. It used to
 * be taken in the loop's last run of its posts, after the decision to end: 0 returned, and
 * nothing waited for it. */
static void hold_b(ug_server *srv, void *user) {
    (void)user;
    hold_rc = ug_server_hold(srv);
}
static void release_then_post_hold(ug_server *srv, void *user) {
    (void)user;
    CU_ASSERT_EQUAL(ug_server_release(srv), 0);
    CU_ASSERT_EQUAL(ug_server_post(srv, hold_b, NULL), 0);
}
static void hold_a(ug_server *srv, void *user) {
    (void)user;
    CU_ASSERT_EQUAL(ug_server_hold(srv), 0);
}

static void test_hold_handed_over_at_the_end(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    CU_ASSERT_EQUAL(ts_on_loop(&sc, hold_a, NULL), 0);
    ug_shutdown_opts o = {.drain_timeout_ms = 400};
    uint64_t t0 = tu_now_ms();
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    usleep(100 * 1000); /* the listener has closed: only the hold keeps the run going */
    hold_rc = 1;
    CU_ASSERT_EQUAL(ug_server_post(sc.srv, release_then_post_hold, NULL), 0);
    ts_join(&sc);
    uint64_t took = tu_now_ms() - t0;
    CU_ASSERT_EQUAL(hold_rc, 0);
    CU_ASSERT(took >= 390 && took < 400 + 400);
    CU_ASSERT_EQUAL(sc.run_rc, 1);
    CU_ASSERT_EQUAL(sc.report.holds_forced, 1);
    CU_ASSERT_EQUAL(ug_server_release(sc.srv), -EINVAL); /* dropped: a late release is harmless */
    ug_server_free(sc.srv);
}

/* ------------------------------------------------------------------ accept re-arm */

/* A CQ far smaller than the burst of connections: the multishot accept ends on CQ overflow
 * (a CQE without IORING_CQE_F_MORE) and must be re-armed; every client is served. */
static void test_accept_rearmed_after_overflow(void) {
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.ring_entries = 4; /* CQ of 16 */
    srv_ctx sc;
    ts_start(&sc, &cfg);
    enum { N = 300 };
    static int fds[N];
    /* Block the loop, so that every handshake completes while it cannot reap: when it
     * enters the ring again, N accepts complete at once into a CQ of 16. */
    int blocker = tu_connect(sc.port);
    static const char block[] = "GET /block?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(blocker, block, sizeof block - 1), 0);
    usleep(50 * 1000);
    for (int i = 0; i < N; i++) fds[i] = tu_connect(sc.port);
    CU_ASSERT_EQUAL(tu_read_response(blocker, NULL, 0, NULL), 200);
    tu_forget(blocker);
    close(blocker);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        if (fds[i] < 0) continue;
        if (tu_send_all(fds[i], GET_ROOT, sizeof GET_ROOT - 1) == 0 &&
            tu_read_response(fds[i], NULL, 0, NULL) == 200)
            ok++;
    }
    CU_ASSERT_EQUAL(ok, N);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0) {
            tu_forget(fds[i]);
            close(fds[i]);
        }
    ug_server_shutdown(sc.srv, NULL);
    ts_join(&sc);
    if (g_backend == UG_BACKEND_URING) {
        if (sc.stats.accept_rearms == 0) fprintf(stderr, "no accept re-arm was provoked\n");
        CU_ASSERT(sc.stats.accept_rearms > 0);
    }
    CU_ASSERT_EQUAL(sc.stats.conns_accepted, N + 1);
    ug_server_free(sc.srv);
}

static void register_suites(void) {
    CU_pSuite s =
        CU_add_suite(g_backend == UG_BACKEND_URING ? "gate-uring" : "gate-epoll", NULL, NULL);
    CU_add_test(s, "20 shutdowns under load, nothing lost", test_shutdown_under_load_20);
    CU_add_test(s, "connects racing the gate are served or refused", test_connects_racing_the_gate);
    CU_add_test(s, "concurrent and repeated shutdown", test_concurrent_repeated_shutdown);
    CU_add_test(s, "exit fast without connections", test_exit_fast_without_connections);
    CU_add_test(s, "immediate shutdown", test_immediate);
    CU_add_test(s, "graceful then immediate", test_graceful_then_immediate);
    CU_add_test(s, "deadline within 50 ms, cancels fire", test_deadline_precision);
    CU_add_test(s, "the deadline logs each forced request", test_deadline_logs_forced_requests);
    CU_add_test(s, "lame duck", test_lame_duck);
    CU_add_test(s, "hooks hold the drain", test_hook_holds_drain);
    CU_add_test(s, "accept re-armed after CQ overflow", test_accept_rearmed_after_overflow);
    CU_add_test(s, "loop 0 ends first: holds, immediate, drain time", test_loop0_ends_first);
    CU_add_test(s, "a hold handed over as the loop ends is waited for",
                test_hold_handed_over_at_the_end);
    CU_add_test(s, "an immediate shutdown while the gate closes", test_immediate_while_closing);
}

int main(int argc, char **argv) {
    ts_init(argc, argv);
    return tu_main(register_suites, 280);
}
