/* Middleware chains, end to end: the order of middlewares, handler, completion callbacks and
 * the server's hooks; short-circuit, defer and pass on later; headers set, replaced and
 * removed along the chain; every misuse detected, counted, logged with the middleware's
 * name, and the connection still served after it. */
#include "testserver.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- recorders ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char trace[512]; /* what ran, in order, for the last request */
static char logs[4096];
static int rc_seen[8]; /* return codes of ug_next / ug_resp_send the misuse cases got */
static int nrc;

static void tr(const char *what) {
    pthread_mutex_lock(&mu);
    size_t n = strlen(trace);
    snprintf(trace + n, sizeof trace - n, "%s%s", n ? " " : "", what);
    pthread_mutex_unlock(&mu);
}

static void note_rc(int rc) {
    pthread_mutex_lock(&mu);
    if (nrc < 8) rc_seen[nrc++] = rc;
    pthread_mutex_unlock(&mu);
}

/* The return codes noted so far are these (n of them; the loop thread writes them). */
static int rcs_are(int n, int first, int second) {
    pthread_mutex_lock(&mu);
    int ok = nrc == n && rc_seen[0] == first && (n < 2 || rc_seen[1] == second);
    pthread_mutex_unlock(&mu);
    return ok;
}

static void reset(void) {
    pthread_mutex_lock(&mu);
    trace[0] = 0;
    logs[0] = 0;
    nrc = 0;
    pthread_mutex_unlock(&mu);
}

static int trace_is(const char *want) {
    pthread_mutex_lock(&mu);
    int ok = !strcmp(trace, want);
    if (!ok) fprintf(stderr, "trace: \"%s\", want \"%s\"\n", trace, want);
    pthread_mutex_unlock(&mu);
    return ok;
}

static int traced(const char *what) {
    pthread_mutex_lock(&mu);
    int ok = strstr(trace, what) != NULL;
    pthread_mutex_unlock(&mu);
    return ok;
}

static int logged(const char *what) {
    pthread_mutex_lock(&mu);
    int ok = strstr(logs, what) != NULL;
    if (!ok) fprintf(stderr, "not logged: \"%s\" in \"%s\"\n", what, logs);
    pthread_mutex_unlock(&mu);
    return ok;
}

static void log_fn(void *user, ug_log_level lvl, const char *msg) {
    (void)user;
    (void)lvl;
    pthread_mutex_lock(&mu);
    size_t n = strlen(logs);
    snprintf(logs + n, sizeof logs - n, "%s\n", msg);
    pthread_mutex_unlock(&mu);
}

/* A completion callback that records the name it was given. */
static void done_cb(const ug_request *req, const ug_completion *info, void *user) {
    (void)req;
    (void)info;
    char b[32];
    snprintf(b, sizeof b, "~%s", (const char *)user);
    tr(b);
}

static void server_hook(const ug_request *req, const ug_completion *info, void *user) {
    (void)req;
    (void)user;
    char b[32];
    snprintf(b, sizeof b, "S%d", info->status);
    tr(b);
}

/* ---------------------------------------------------------------- middlewares ---- */

/* Records its name, registers a completion callback, adds X-<name>, passes on. */
static ug_handler_result mw_pass(ug_request *req, ug_chain_pos next, void *user) {
    const char *name = user;
    tr(name);
    CU_ASSERT_EQUAL(ug_req_on_complete(req, done_cb, user), 0);
    char h[32];
    snprintf(h, sizeof h, "X-%s", name);
    CU_ASSERT_EQUAL(ug_resp_header_set(req, h, "1"), 0);
    CU_ASSERT_EQUAL(ug_next(req, next), 0);
    return UG_DONE;
}

/* A token check: 401 without "X-Token: t", else it replaces the header the first middleware
 * set and removes the one it does not want. */
static ug_handler_result mw_auth(ug_request *req, ug_chain_pos next, void *user) {
    tr(user);
    ug_str t = ug_req_header(req, "X-Token");
    if (!t.ptr || t.len != 1 || t.ptr[0] != 't') {
        ug_resp_send(req, 401, "text/plain", "no\n", 3);
        return UG_DONE;
    }
    CU_ASSERT_EQUAL(ug_resp_header_set(req, "X-A", "replaced"), 0);
    CU_ASSERT_EQUAL(ug_resp_header_remove(req, "X-Gone"), 1);
    ug_next(req, next);
    return UG_DONE;
}

static ug_handler_result mw_add_gone(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    ug_resp_header_set(req, "X-Gone", "1");
    ug_next(req, next);
    return UG_DONE;
}

static ug_handler_result h_ok(ug_request *req, void *user) {
    (void)user;
    tr("H");
    ug_resp_send(req, 200, "text/plain", "ok\n", 3);
    return UG_DONE;
}

/* Defers, then passes the request on from a timer. */
static ug_chain_pos g_later_pos;
static void later_next(ug_request *req, void *user) {
    (void)user;
    tr("timer");
    CU_ASSERT_EQUAL(ug_next(req, g_later_pos), 0);
}
static void later_cancel(ug_request *req, ug_cancel_reason why, void *user) {
    (void)req;
    (void)user;
    char b[32];
    snprintf(b, sizeof b, "cancel%d", (int)why);
    tr(b);
}
static ug_handler_result mw_later(ug_request *req, ug_chain_pos next, void *user) {
    tr(user);
    g_later_pos = next;
    ug_req_on_cancel(req, later_cancel, NULL);
    ug_str ms = ug_req_query_param(req, "never");
    if (!ms.ptr) CU_ASSERT_EQUAL(ug_req_timer(req, 20, later_next, NULL), 0);
    return UG_LATER;
}

/* The misuses. */
static ug_handler_result mw_twice(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    note_rc(ug_next(req, next));
    note_rc(ug_next(req, next));
    return UG_DONE;
}
static ug_handler_result mw_after_answer(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    ug_resp_send(req, 403, "text/plain", "mine\n", 5);
    note_rc(ug_next(req, next));
    return UG_DONE;
}
static ug_handler_result mw_forgets(ug_request *req, ug_chain_pos next, void *user) {
    (void)req;
    (void)next;
    (void)user;
    return UG_DONE;
}
static ug_handler_result mw_answers_twice(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    ug_next(req, next);
    note_rc(ug_resp_send(req, 500, "text/plain", "again\n", 6));
    return UG_DONE;
}
/* ug_next twice, the second from deferred work, while the handler itself defers. */
static ug_server *g_srv;
static uint64_t g_late_id;
static ug_chain_pos g_late_pos;
static void late_second(ug_server *srv, void *user) {
    (void)user;
    ug_request *req = ug_req_find(srv, g_late_id);
    CU_ASSERT_PTR_NOT_NULL(req);
    if (req) note_rc(ug_next(req, g_late_pos));
}
static ug_handler_result mw_twice_later(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    g_late_id = ug_req_id(req);
    g_late_pos = next;
    ug_next(req, next);
    CU_ASSERT_EQUAL(ug_req_post(g_srv, g_late_id, late_second, NULL), 0);
    return UG_DONE;
}
static void slow_answer(ug_request *req, void *user) {
    (void)user;
    ug_resp_send(req, 200, "text/plain", "slow\n", 5);
}
static ug_handler_result h_slow(ug_request *req, void *user) {
    (void)user;
    ug_req_timer(req, 100, slow_answer, NULL);
    return UG_LATER;
}
/* Answers right after passing the request on, while the handler defers. */
static ug_handler_result mw_answer_after_next(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    ug_next(req, next);
    note_rc(ug_resp_send(req, 500, "text/plain", "mine\n", 5));
    return UG_DONE;
}

static ug_handler_result mw_many_callbacks(ug_request *req, ug_chain_pos next, void *user) {
    /* A and B took two places. */
    for (int i = 0; i < UG_REQ_ON_COMPLETE_MAX - 2; i++)
        CU_ASSERT_EQUAL(ug_req_on_complete(req, done_cb, user), 0);
    CU_ASSERT_EQUAL(ug_req_on_complete(req, done_cb, user), -ENOSPC);
    ug_next(req, next);
    return UG_DONE;
}

/* ---------------------------------------------------------------- the server ---- */

static srv_ctx sc;

static void start_cfg(uint32_t handler_timeout_ms, uint32_t max_inflight) {
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.log = log_fn;
    cfg.handler_timeout_ms = handler_timeout_ms;
    if (max_inflight) cfg.max_inflight = max_inflight;
    ts_create(&sc, &cfg);
    g_srv = sc.srv;
    ug_server *s = sc.srv;
    CU_ASSERT_EQUAL(ug_use(s, "A", mw_pass, "A"), 0);
    CU_ASSERT_EQUAL(ug_use(s, "B", mw_pass, "B"), 0);
    const char *paths[] = {"/c/order",  "/c/auth",  "/c/later",      "/c/twice", "/c/after",
                           "/c/forget", "/c/again", "/c/twice-late", "/c/many",  "/c/after-next"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        ug_handler_fn h = i == 7 || i == 9 ? h_slow : h_ok;
        CU_ASSERT_EQUAL(ug_route(s, "GET", paths[i], UG_ROUTE_EXACT, h, NULL), 0);
    }
    CU_ASSERT_EQUAL(
        ug_route_use(s, "GET", "/c/after-next", "answers-after-next", mw_answer_after_next, NULL),
        0);
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/order", "C", mw_pass, "C"), 0);
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/auth", "gone", mw_add_gone, NULL), 0);
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/auth", "auth", mw_auth, "auth"), 0);
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/later", "later", mw_later, "later"), 0);
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/twice", "twice", mw_twice, NULL), 0);
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/after", "after-answer", mw_after_answer, NULL), 0);
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/forget", "forgetful", mw_forgets, NULL), 0);
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/again", "answers-twice", mw_answers_twice, NULL), 0);
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/twice-late", "twice-later", mw_twice_later, NULL),
                    0);
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/many", "many", mw_many_callbacks, "m"), 0);
    /* Registration errors. */
    CU_ASSERT_EQUAL(ug_route_use(s, "GET", "/c/none", "x", mw_pass, NULL), -ENOENT);
    CU_ASSERT_EQUAL(ug_route_use(s, "POST", "/c/order", "x", mw_pass, NULL), -ENOENT);
    CU_ASSERT_EQUAL(ug_use(s, NULL, mw_pass, NULL), -EINVAL);
    CU_ASSERT_EQUAL(ug_server_on_complete(s, server_hook, NULL), 0);
    ts_run(&sc);
}

static void start(uint32_t handler_timeout_ms) {
    start_cfg(handler_timeout_ms, 0);
}

/* One request on fd; its status, its head in *hdrs. */
static int get(int fd, const char *path, const char *extra, const char **hdrs) {
    char req[256], body[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n", path, extra);
    reset();
    if (tu_send_all(fd, req, (size_t)n)) return -1;
    return tu_read_response(fd, body, sizeof body, hdrs);
}

static uint64_t misuse_count(void) {
    ug_stats st;
    CU_ASSERT_EQUAL(ts_stats_now(&sc, &st), 0);
    return st.middleware_misuse;
}

static void hang_up_fd(int fd) {
    tu_forget(fd);
    close(fd);
}

/* The connection is still served after what happened on it. */
static void still_served(int fd) {
    CU_ASSERT_EQUAL(get(fd, "/c/order", "", NULL), 200);
}

static void test_order(void) {
    start(0);
    int fd = tu_connect(sc.port);
    const char *h;
    CU_ASSERT_EQUAL(get(fd, "/c/order", "", &h), 200);
    /* The completion callbacks run when the response is queued: before it is read. */
    CU_ASSERT(trace_is("A B C H ~C ~B ~A S200"));
    CU_ASSERT(strstr(h, "X-A: 1\r\n") && strstr(h, "X-B: 1\r\n") && strstr(h, "X-C: 1\r\n"));
    /* Unrouted: the global chain, then the core's 404; not the route's middlewares. */
    CU_ASSERT_EQUAL(get(fd, "/c/nowhere", "", &h), 404);
    CU_ASSERT(trace_is("A B ~B ~A S404"));
    CU_ASSERT(strstr(h, "X-A: 1\r\n") != NULL);
    /* At most UG_REQ_ON_COMPLETE_MAX callbacks a request: A's, B's and 6 of m's. */
    CU_ASSERT_EQUAL(get(fd, "/c/many", "", NULL), 200);
    CU_ASSERT(trace_is("A B H ~m ~m ~m ~m ~m ~m ~B ~A S200"));
    CU_ASSERT_EQUAL(misuse_count(), 0);
    tu_forget(fd);
    close(fd);
    CU_ASSERT_EQUAL(ug_use(sc.srv, "late", mw_pass, NULL), -EBUSY);
    ts_stop(&sc);
}

static void test_short_circuit_and_headers(void) {
    start(0);
    int fd = tu_connect(sc.port);
    const char *h;
    CU_ASSERT_EQUAL(get(fd, "/c/auth", "", &h), 401);
    CU_ASSERT(trace_is("A B auth ~B ~A S401")); /* the handler did not run */
    CU_ASSERT_EQUAL(get(fd, "/c/auth", "X-Token: t\r\n", &h), 200);
    CU_ASSERT(trace_is("A B auth H ~B ~A S200"));
    CU_ASSERT(strstr(h, "X-A: replaced\r\n") != NULL);
    CU_ASSERT(strstr(h, "X-Gone") == NULL);
    CU_ASSERT(strstr(h, "X-B: 1\r\n") != NULL);
    CU_ASSERT_EQUAL(misuse_count(), 0);
    tu_forget(fd);
    close(fd);
    ts_stop(&sc);
}

static void test_defer_then_next(void) {
    start(300);
    int fd = tu_connect(sc.port);
    CU_ASSERT_EQUAL(get(fd, "/c/later", "", NULL), 200);
    CU_ASSERT(trace_is("A B later timer H ~B ~A S200"));
    /* Deferred and never passed on: the handler timeout answers 503 and the middleware's
     * cancel callback hears it (after the completion callbacks). */
    uint64_t t0 = tu_now_ms();
    CU_ASSERT_EQUAL(get(fd, "/c/later?never=1", "", NULL), 503);
    CU_ASSERT(tu_now_ms() - t0 >= 250);
    usleep(20000);
    char want[64];
    snprintf(want, sizeof want, "A B later ~B ~A S503 cancel%d", (int)UG_CANCEL_TIMEOUT);
    CU_ASSERT(trace_is(want));
    tu_forget(fd);
    close(fd);
    /* Deferred, and the client goes away: the cancel callback, with the reason. */
    fd = tu_connect(sc.port);
    static const char req[] = "GET /c/later?never=1 HTTP/1.1\r\nHost: t\r\n\r\n";
    reset();
    CU_ASSERT_EQUAL(tu_send_all(fd, req, sizeof req - 1), 0);
    usleep(50000);
    close(fd);
    for (int i = 0; i < 100 && !traced("cancel"); i++) usleep(10000);
    snprintf(want, sizeof want, "A B later ~B ~A S0 cancel%d", (int)UG_CANCEL_CLIENT_GONE);
    CU_ASSERT(trace_is(want));
    CU_ASSERT_EQUAL(misuse_count(), 0);
    ts_stop(&sc);
}

/* A middleware's deferred work at the drain deadline: forced, and its cancel callback told. */
static void test_deferred_at_deadline(void) {
    start(0);
    int fd = tu_connect(sc.port);
    static const char req[] = "GET /c/later?never=1 HTTP/1.1\r\nHost: t\r\n\r\n";
    reset();
    CU_ASSERT_EQUAL(tu_send_all(fd, req, sizeof req - 1), 0);
    for (int i = 0; i < 100 && !traced("later"); i++) usleep(10000);
    ug_shutdown_opts opts = {.drain_timeout_ms = 200};
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &opts), 0);
    ts_join(&sc);
    char want[64];
    snprintf(want, sizeof want, "A B later ~B ~A S0 cancel%d", (int)UG_CANCEL_DEADLINE);
    CU_ASSERT(trace_is(want));
    CU_ASSERT_EQUAL(sc.report.requests_forced, 1);
    hang_up_fd(fd);
    ug_server_free(sc.srv);
}

static void test_misuse(void) {
    start(0);
    int fd = tu_connect(sc.port);
    uint64_t m0 = misuse_count();

    CU_ASSERT_EQUAL(get(fd, "/c/twice", "", NULL), 200);
    CU_ASSERT(rcs_are(2, 0, -EALREADY));
    CU_ASSERT(logged("middleware \"twice\": ug_next called twice"));
    CU_ASSERT_EQUAL(misuse_count(), m0 + 1);
    still_served(fd);

    CU_ASSERT_EQUAL(get(fd, "/c/after", "", NULL), 403);
    CU_ASSERT(rcs_are(1, -EALREADY, 0));
    CU_ASSERT(logged("middleware \"after-answer\": ug_next called after the response"));
    CU_ASSERT_EQUAL(misuse_count(), m0 + 2);
    still_served(fd);

    CU_ASSERT_EQUAL(get(fd, "/c/again", "", NULL), 200);
    CU_ASSERT(rcs_are(1, -EALREADY, 0));
    CU_ASSERT(logged("middleware \"answers-twice\": answered twice"));
    CU_ASSERT_EQUAL(misuse_count(), m0 + 3);
    still_served(fd);

    /* The second ug_next comes later, from deferred work, while the handler defers too. */
    CU_ASSERT_EQUAL(get(fd, "/c/twice-late", "", NULL), 200);
    CU_ASSERT(rcs_are(1, -EALREADY, 0));
    CU_ASSERT(logged("middleware \"twice-later\": ug_next called twice"));
    CU_ASSERT_EQUAL(misuse_count(), m0 + 4);
    still_served(fd);

    /* Answering right after passing on, with the handler deferred: refused, and the
     * handler's own answer is the one the client gets. */
    const char *h;
    char body[64];
    reset();
    static const char an[] = "GET /c/after-next HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, an, sizeof an - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &h), 200);
    CU_ASSERT_STRING_EQUAL(body, "slow\n");
    CU_ASSERT(rcs_are(1, -EALREADY, 0));
    CU_ASSERT(logged("middleware \"answers-after-next\": answered after passing the request on"));
    CU_ASSERT_EQUAL(misuse_count(), m0 + 5);
    still_served(fd);

    /* Returning without answering or passing on: 500, and the connection closes as after
     * any 500 of the core's. */
    CU_ASSERT_EQUAL(get(fd, "/c/forget", "", NULL), 500);
    CU_ASSERT(logged("middleware \"forgetful\": returned UG_DONE without answering"));
    CU_ASSERT_EQUAL(misuse_count(), m0 + 6);
    CU_ASSERT(tu_wait_eof(fd, 2000));
    tu_forget(fd);
    close(fd);
    fd = tu_connect(sc.port);
    still_served(fd);
    tu_forget(fd);
    close(fd);
    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.stats.middleware_misuse, m0 + 6);
    CU_ASSERT_EQUAL(sc.stats.handler_no_response, 0);
}

/* With global middlewares (which may defer) every request counts against max_inflight,
 * the ones no route takes too. */
static void test_inflight_routeless(void) {
    /* max_inflight is split among the loops: one each, held by a deferred request each. */
    unsigned n = g_threads;
    start_cfg(0, n);
    int fds[4], extra;
    static const char req[] = "GET /c/later?never=1 HTTP/1.1\r\nHost: t\r\n\r\n";
    ug_stats st = {0};
    for (unsigned k = 0; k < n; k++) {
        fds[k] = tu_connect(sc.port);
        CU_ASSERT_EQUAL(tu_send_all(fds[k], req, sizeof req - 1), 0);
        for (int i = 0; i < 100 && ts_stats_now(&sc, &st) == 0 && st.inflight < k + 1; i++)
            usleep(10000);
    }
    CU_ASSERT_EQUAL(st.inflight, n);
    extra = tu_connect(sc.port);
    CU_ASSERT_EQUAL(get(extra, "/c/nowhere", "", NULL), 503);
    for (unsigned k = 0; k < n; k++) hang_up_fd(fds[k]);
    hang_up_fd(extra);
    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.stats.shed, 1);
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("chain", NULL, NULL);
    CU_add_test(s, "order: middlewares, handler, completion callbacks, hooks", test_order);
    CU_add_test(s, "short-circuit, and headers along the chain", test_short_circuit_and_headers);
    CU_add_test(s, "defer, then pass on; the handler timeout; the client gone",
                test_defer_then_next);
    CU_add_test(s, "a deferred middleware at the drain deadline", test_deferred_at_deadline);
    CU_add_test(s, "misuse: detected, counted, logged, the connection served", test_misuse);
    CU_add_test(s, "max_inflight counts what no route takes, with global middlewares",
                test_inflight_routeless);
}

int main(int argc, char **argv) {
    ts_init(argc, argv);
    return tu_main(register_suites, 120);
}
