#include "testserver.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

ug_backend_kind g_backend = UG_BACKEND_URING;
unsigned g_threads = 1;

static ug_handler_result h_hello(ug_request *req, void *user) {
    (void)user;
    ug_resp_send(req, 200, "text/plain", "Hello, World!", 13);
    return UG_DONE;
}

static ug_handler_result h_echo(ug_request *req, void *user) {
    (void)user;
    ug_str b = ug_req_body(req);
    ug_resp_send(req, 200, "application/octet-stream", b.ptr, b.len);
    return UG_DONE;
}

static ug_handler_result h_path(ug_request *req, void *user) { /* echoes the target */
    (void)user;
    ug_str t = ug_req_target(req);
    ug_resp_send(req, 200, "text/plain", t.ptr, t.len);
    return UG_DONE;
}

static ug_handler_result h_forget(ug_request *req, void *user) {
    (void)req;
    (void)user;
    return UG_DONE; /* the bug the server must cover with a 500 */
}

static void on_cancel(ug_request *req, ug_cancel_reason why, void *user) {
    (void)req;
    srv_ctx *sc = user;
    __atomic_add_fetch(&sc->cancelled, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sc->last_reason, why, __ATOMIC_SEQ_CST);
}

static void late_done(ug_request *req, void *user) {
    (void)user;
    ug_resp_send(req, 200, "text/plain", "late", 4);
}

static ug_handler_result h_late(ug_request *req, void *user) {
    ug_str v = ug_req_query_param(req, "ms");
    uint32_t ms = v.ptr ? (uint32_t)atoi(v.ptr) : 50;
    ug_req_on_cancel(req, on_cancel, user);
    CU_ASSERT_EQUAL(ug_req_timer(req, ms, late_done, NULL), 0);
    return UG_LATER;
}

/* Blocks the loop thread on purpose (tests only): completions pile up meanwhile. */
static ug_handler_result h_block(ug_request *req, void *user) {
    (void)user;
    ug_str v = ug_req_query_param(req, "ms");
    usleep((useconds_t)(v.ptr ? atoi(v.ptr) : 100) * 1000);
    ug_resp_send(req, 200, "text/plain", "blocked", 7);
    return UG_DONE;
}

static ug_handler_result h_big(ug_request *req, void *user) { /* 4 MiB streamed */
    (void)user;
    static _Thread_local char chunk[65536]; /* loops run it at once */
    memset(chunk, 'x', sizeof chunk);
    ug_req_on_cancel(req, on_cancel, user);
    ug_resp_start(req, 200, "application/octet-stream");
    for (int i = 0; i < 64; i++) ug_resp_write(req, chunk, sizeof chunk);
    ug_resp_end(req);
    return UG_DONE;
}

/* Records atomically: the test thread reads these while the loop runs. */
static void on_cancel_rec(ug_request *req, ug_cancel_reason why, void *user) {
    (void)req;
    srv_ctx *sc = user;
    __atomic_store_n(&sc->last_reason, why, __ATOMIC_SEQ_CST);
    if ((unsigned)why < sizeof sc->cancel_by_reason / sizeof sc->cancel_by_reason[0])
        __atomic_add_fetch(&sc->cancel_by_reason[why], 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&sc->cancelled, 1, __ATOMIC_SEQ_CST);
}

static ug_handler_result h_late_id(ug_request *req, void *user) {
    srv_ctx *sc = user;
    ug_req_on_cancel(req, on_cancel_rec, sc);
    ug_str v = ug_req_query_param(req, "ms");
    if (v.ptr) CU_ASSERT_EQUAL(ug_req_timer(req, (uint32_t)atoi(v.ptr), late_done, NULL), 0);
    __atomic_store_n(&sc->last_id, ug_req_id(req), __ATOMIC_SEQ_CST);
    return UG_LATER;
}

static ug_handler_result h_authority(ug_request *req, void *user) {
    (void)user;
    ug_str a = ug_req_authority(req);
    if (!a.ptr) a = (ug_str){"(none)", 6};
    ug_resp_send(req, 200, "text/plain", a.ptr, a.len);
    return UG_DONE;
}

static void *run_thread(void *arg) {
    srv_ctx *sc = arg;
    sc->run_rc = ug_server_run(sc->srv, &sc->report);
    ug_server_stats(sc->srv, &sc->stats);
    return NULL;
}

static void quiet_log(void *u, ug_log_level l, const char *m) {
    (void)u;
    if (l <= UG_LOG_ERROR) fprintf(stderr, "server: %s\n", m);
}

void ts_create(srv_ctx *sc, ug_config *cfg_in) {
    ug_config defcfg;
    ug_config *cfg = cfg_in;
    if (!cfg) {
        ug_config_init(&defcfg);
        cfg = &defcfg;
    }
    memset(sc, 0, sizeof *sc);
    cfg->port = 0;
    cfg->backend = g_backend;
    if (!cfg->threads || cfg->threads == 1) cfg->threads = g_threads;
    if (!cfg->log) cfg->log = quiet_log; /* a test may bring its own */
    int rc = ug_server_create(&sc->srv, cfg);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    ug_route(sc->srv, "GET", "/", UG_ROUTE_EXACT, h_hello, sc);
    ug_route(sc->srv, "POST", "/echo", UG_ROUTE_EXACT, h_echo, sc);
    ug_route(sc->srv, NULL, "/path", UG_ROUTE_PREFIX, h_path, sc);
    ug_route(sc->srv, "GET", "/forget", UG_ROUTE_EXACT, h_forget, sc);
    ug_route(sc->srv, "GET", "/late", UG_ROUTE_EXACT, h_late, sc);
    ug_route(sc->srv, "GET", "/big", UG_ROUTE_EXACT, h_big, sc);
    ug_route(sc->srv, "GET", "/block", UG_ROUTE_EXACT, h_block, sc);
    ug_route(sc->srv, "GET", "/late-id", UG_ROUTE_EXACT, h_late_id, sc);
    ug_route(sc->srv, "GET", "/authority", UG_ROUTE_EXACT, h_authority, sc);
    sc->port = ug_server_port(sc->srv);
}

void ts_run(srv_ctx *sc) {
    CU_ASSERT_EQUAL_FATAL(pthread_create(&sc->thr, NULL, run_thread, sc), 0);
}

void ts_start(srv_ctx *sc, ug_config *cfg) {
    ts_create(sc, cfg);
    ts_run(sc);
}

void ts_join(srv_ctx *sc) {
    pthread_join(sc->thr, NULL);
}

void ts_drain(srv_ctx *sc) {
    ug_shutdown_opts o = {.drain_timeout_ms = 5000};
    CU_ASSERT_EQUAL(ug_server_shutdown(sc->srv, &o), 0);
    pthread_join(sc->thr, NULL);
    CU_ASSERT_EQUAL(ug_server_state(sc->srv), UG_GATE_CLOSED);
    CU_ASSERT_EQUAL(sc->report.accepted_after_close, 0);
}

void ts_stop(srv_ctx *sc) {
    ts_drain(sc);
    ug_server_free(sc->srv);
}

void ts_init(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "epoll")) {
        g_backend = UG_BACKEND_EPOLL;
    } else {
        tu_require_uring();
    }
    if (argc > 2) g_threads = (unsigned)atoi(argv[2]);
    if (g_threads < 1) g_threads = 1;
    fprintf(stderr, "backend %s, %u loop(s)\n",
            g_backend == UG_BACKEND_EPOLL ? "epoll" : "io_uring", g_threads);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

typedef struct sync_post {
    ug_post_fn fn;
    void *user;
    int done;
} sync_post;

static void sync_post_run(ug_server *srv, void *arg) {
    sync_post *p = arg;
    p->fn(srv, p->user);
    __atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
}

int ts_on_loop(srv_ctx *sc, ug_post_fn fn, void *user) {
    return ts_on_loop_n(sc, 0, fn, user);
}

int ts_on_req_loop(srv_ctx *sc, uint64_t id, ug_post_fn fn, void *user) {
    sync_post p = {fn, user, 0};
    int rc = ug_req_post(sc->srv, id, sync_post_run, &p);
    if (rc) return rc;
    while (!__atomic_load_n(&p.done, __ATOMIC_ACQUIRE)) usleep(200);
    return 0;
}

int ts_on_loop_n(srv_ctx *sc, unsigned loop, ug_post_fn fn, void *user) {
    sync_post p = {fn, user, 0};
    int rc = ug_server_post_loop(sc->srv, loop, sync_post_run, &p);
    if (rc) return rc;
    /* Posted work always runs, at the latest before ug_server_run returns; a stuck loop is
     * caught by the test watchdog. */
    while (!__atomic_load_n(&p.done, __ATOMIC_ACQUIRE)) usleep(200);
    return 0;
}

static void stats_fn(ug_server *srv, void *user) {
    ug_server_stats(srv, user);
}

int ts_stats_now(srv_ctx *sc, ug_stats *out) {
    return ts_on_loop(sc, stats_fn, out);
}
