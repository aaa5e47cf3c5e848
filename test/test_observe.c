/* Seeing the server from outside, end to end: the connection-state and completion hooks
 * (what they report, in what order), the live JSON dump (well-formed, and showing what a
 * drain waits for), labelled holds (and the deadline's line per label), and the access log
 * (its lines, written without traffic to push them). */
#include "testserver.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char GET_ROOT[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
static const char GET_NOPE[] = "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n";
static const char BAD[] = "GET / HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n";

static void get(int fd, const char *req, int want) {
    char body[256];
    CU_ASSERT_EQUAL(tu_send_all(fd, req, strlen(req)), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), want);
}

static void hang_up(int fd) {
    tu_forget(fd);
    close(fd);
}

/* ---------------------------------------------------------------- recorders ---- */

#define MAX_EVENTS 256
static pthread_mutex_t rec_mu = PTHREAD_MUTEX_INITIALIZER;
static ug_conn_info conn_events[MAX_EVENTS];
static int conn_peer_v4[MAX_EVENTS]; /* NEW: the peer was 127.0.0.1 */
static int nconn_events;
static ug_completion done_events[MAX_EVENTS];
static char done_methods[MAX_EVENTS][16];
static int ndone_events;

static void rec_reset(void) {
    pthread_mutex_lock(&rec_mu);
    nconn_events = ndone_events = 0;
    pthread_mutex_unlock(&rec_mu);
}

static void on_conn(ug_server *srv, const ug_conn_info *info, void *user) {
    (void)srv;
    (void)user;
    pthread_mutex_lock(&rec_mu);
    if (nconn_events < MAX_EVENTS) {
        const struct sockaddr_in *a = info->peer;
        conn_peer_v4[nconn_events] = info->peer && info->peer_len >= sizeof *a &&
                                     a->sin_family == AF_INET &&
                                     ntohl(a->sin_addr.s_addr) == INADDR_LOOPBACK;
        conn_events[nconn_events++] = *info;
    }
    pthread_mutex_unlock(&rec_mu);
}

static void on_done(const ug_request *req, const ug_completion *info, void *user) {
    (void)user;
    ug_str m = ug_req_method(req);
    pthread_mutex_lock(&rec_mu);
    if (ndone_events < MAX_EVENTS) {
        snprintf(done_methods[ndone_events], sizeof done_methods[0], "%.*s", (int)m.len,
                 m.ptr ? m.ptr : "");
        done_events[ndone_events++] = *info;
    }
    pthread_mutex_unlock(&rec_mu);
}

static int count_done(void) {
    pthread_mutex_lock(&rec_mu);
    int n = ndone_events;
    pthread_mutex_unlock(&rec_mu);
    return n;
}

/* Wait until the recorder has n completions (or 5 s pass). */
static int wait_done(int n) {
    for (int i = 0; i < 1000 && count_done() < n; i++) usleep(5000);
    return count_done();
}

/* The states one connection went through, in order. */
static int states_of(uint64_t conn_id, ug_conn_state *out, int max) {
    int k = 0;
    pthread_mutex_lock(&rec_mu);
    for (int i = 0; i < nconn_events && k < max; i++)
        if (conn_events[i].conn_id == conn_id) out[k++] = conn_events[i].state;
    pthread_mutex_unlock(&rec_mu);
    return k;
}

/* ---------------------------------------------------------------- hooks ---- */

/* Wait until the recorder has n events of state st (or 5 s pass). */
static int wait_state(ug_conn_state st, int n) {
    int k = 0;
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&rec_mu);
        k = 0;
        for (int j = 0; j < nconn_events; j++) k += conn_events[j].state == st;
        pthread_mutex_unlock(&rec_mu);
        if (k >= n) break;
        usleep(5000);
    }
    return k;
}

static void test_conn_states(void) {
    rec_reset();
    srv_ctx sc;
    ts_create(&sc, NULL);
    CU_ASSERT_EQUAL(ug_server_on_conn_state(sc.srv, on_conn, NULL), 0);
    CU_ASSERT_EQUAL(ug_server_on_conn_state(sc.srv, NULL, NULL), -EINVAL);
    ts_run(&sc);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    /* Each step waits for the server to have seen the last: a request that arrives with the
     * completion of the send before it finds the connection never idle, which is right too. */
    get(fd, GET_ROOT, 200);
    CU_ASSERT_EQUAL(wait_state(UG_CS_IDLE, 1), 1);
    get(fd, GET_ROOT, 200);
    CU_ASSERT_EQUAL(wait_state(UG_CS_IDLE, 2), 2);
    hang_up(fd);
    uint64_t id = 0;
    for (int i = 0; i < 1000; i++) { /* until CLOSED is recorded */
        pthread_mutex_lock(&rec_mu);
        int closed = nconn_events && conn_events[nconn_events - 1].state == UG_CS_CLOSED;
        if (nconn_events) id = conn_events[0].conn_id;
        pthread_mutex_unlock(&rec_mu);
        if (closed) break;
        usleep(5000);
    }
    ug_conn_state st[16];
    int n = states_of(id, st, 16);
    static const ug_conn_state want[] = {UG_CS_NEW,    UG_CS_ACTIVE, UG_CS_IDLE,
                                         UG_CS_ACTIVE, UG_CS_IDLE,   UG_CS_CLOSED};
    if (n != 6)
        for (int i = 0; i < n; i++) fprintf(stderr, "state %d: %d\n", i, st[i]);
    CU_ASSERT_EQUAL_FATAL(n, 6);
    for (int i = 0; i < n; i++) CU_ASSERT_EQUAL(st[i], want[i]);
    pthread_mutex_lock(&rec_mu);
    CU_ASSERT(conn_peer_v4[0]);                  /* NEW says who */
    CU_ASSERT_PTR_NULL(conn_events[1].peer);     /* the others do not */
    CU_ASSERT_EQUAL(conn_events[5].requests, 2); /* CLOSED says what it did */
    CU_ASSERT_EQUAL(conn_events[5].bytes_in, 2 * (sizeof GET_ROOT - 1));
    CU_ASSERT(conn_events[5].bytes_out > 2 * sizeof "hello");
    CU_ASSERT(conn_events[0].slot < ug_server_conn_slots(sc.srv));
    CU_ASSERT(conn_events[0].loop < g_threads);
    pthread_mutex_unlock(&rec_mu);
    ts_stop(&sc);
}

static const ug_completion *find_done(int status, ug_request_end how) {
    for (int i = 0; i < ndone_events; i++)
        if (done_events[i].status == status && done_events[i].how == how) return &done_events[i];
    return NULL;
}

static void test_completions(void) {
    rec_reset();
    srv_ctx sc;
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.handler_timeout_ms = 200;
    ts_create(&sc, &cfg);
    CU_ASSERT_EQUAL(ug_server_on_complete(sc.srv, on_done, NULL), 0);
    ts_run(&sc);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    get(fd, GET_ROOT, 200);
    get(fd, GET_NOPE, 404);
    get(fd, BAD, 400);
    hang_up(fd);
    fd = tu_connect(sc.port); /* the handler never answers: 503 at 200 ms */
    get(fd, "GET /late-id HTTP/1.1\r\nHost: t\r\n\r\n", 503);
    hang_up(fd);
    fd = tu_connect(sc.port); /* the client leaves while its request waits */
    static const char LATE[] = "GET /late?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, LATE, sizeof LATE - 1), 0);
    usleep(50000);
    hang_up(fd);
    CU_ASSERT_EQUAL(wait_done(5), 5);
    pthread_mutex_lock(&rec_mu);
    const ug_completion *ok = find_done(200, UG_END_ANSWERED);
    const ug_completion *nope = find_done(404, UG_END_ANSWERED);
    const ug_completion *bad = find_done(400, UG_END_REJECTED);
    const ug_completion *late = find_done(503, UG_END_TIMED_OUT);
    const ug_completion *gone = find_done(0, UG_END_CLIENT_GONE);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ok);
    CU_ASSERT_PTR_NOT_NULL_FATAL(nope);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bad);
    CU_ASSERT_PTR_NOT_NULL_FATAL(late);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gone);
    CU_ASSERT(ok->request_id != 0);
    CU_ASSERT_EQUAL(ok->bytes_in, sizeof GET_ROOT - 1);
    CU_ASSERT(ok->bytes_out > sizeof "HTTP/1.1 200 OK\r\n\r\nhello");
    CU_ASSERT(ok->duration_ns < 5000000000ull);
    CU_ASSERT_EQUAL(ok->conn_id, nope->conn_id);                 /* one connection */
    CU_ASSERT_EQUAL(bad->request_id, 0);                         /* never dispatched */
    CU_ASSERT_STRING_EQUAL(done_methods[bad - done_events], ""); /* refused in its head */
    CU_ASSERT(late->duration_ns >= 200000000ull);
    CU_ASSERT_EQUAL(gone->cancel_reason, UG_CANCEL_CLIENT_GONE);
    CU_ASSERT_EQUAL(gone->bytes_out, 0);
    CU_ASSERT(gone->request_id != 0);
    pthread_mutex_unlock(&rec_mu);
    ts_stop(&sc);
}

/* ---------------------------------------------------------------- the live dump ---- */

/* A JSON checker, enough for the dump: objects, arrays, strings with escapes, numbers,
 * true/false/null. Returns the end of the value, or NULL. */
static const char *json_value(const char *p);
static const char *json_ws(const char *p) {
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
    return p;
}
static const char *json_string(const char *p) {
    if (*p++ != '"') return NULL;
    for (; *p && *p != '"'; p++) {
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i]) return NULL;
                p += 4;
            } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
                return NULL;
            }
        }
    }
    return *p == '"' ? p + 1 : NULL;
}
static const char *json_value(const char *p) {
    p = json_ws(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = json_ws(p + 1);
        if (*p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                if (!(p = json_string(json_ws(p)))) return NULL;
                p = json_ws(p);
                if (*p++ != ':') return NULL;
            }
            if (!(p = json_value(p))) return NULL;
            p = json_ws(p);
            if (*p == close) return p + 1;
            if (*p++ != ',') return NULL;
        }
    }
    if (*p == '"') return json_string(p);
    if (!strncmp(p, "true", 4)) return p + 4;
    if (!strncmp(p, "false", 5)) return p + 5;
    if (!strncmp(p, "null", 4)) return p + 4;
    char *end;
    strtod(p, &end);
    return end == p ? NULL : end;
}
static int json_ok(const char *s) {
    const char *e = json_value(s);
    return e && *json_ws(e) == '\0';
}

static char *dump;

/* Take a dump into `dump` (the last one freed): its length, or the error. */
static int take_dump(ug_server *srv) {
    free(dump);
    dump = NULL;
    size_t len = 0;
    int rc = ug_server_debug_json(srv, 0, &dump, &len);
    if (rc) return rc;
    CU_ASSERT_EQUAL(len, strlen(dump));
    return (int)len;
}

static void dump_from_loop(ug_server *srv, void *user) {
    char *p = NULL;
    *(int *)user = ug_server_debug_json(srv, 100, &p, NULL);
    free(p);
}

/* A request is answered from its loop once the test is done looking at it. */
static void answer_late_id(ug_server *srv, void *user) {
    ug_request *r = ug_req_find(srv, *(uint64_t *)user);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(ug_resp_send(r, 200, "text/plain", "late", 4), 0);
}

static char log_text[8192];
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static void capture_log(void *user, ug_log_level level, const char *msg) {
    (void)user;
    (void)level;
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(log_text);
    snprintf(log_text + n, sizeof log_text - n, "%s\n", msg);
    pthread_mutex_unlock(&log_mu);
}

static void test_debug_dump(void) {
    srv_ctx sc;
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.log = capture_log;
    log_text[0] = '\0';
    ts_start(&sc, &cfg);
    int idle = tu_connect(sc.port), busy = tu_connect(sc.port);
    CU_ASSERT_FATAL(idle >= 0 && busy >= 0);
    get(idle, GET_ROOT, 200);
    static const char LATE_ID[] = "GET /late-id?x=%22q HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(busy, LATE_ID, sizeof LATE_ID - 1), 0);
    for (int i = 0; i < 1000 && !__atomic_load_n(&sc.last_id, __ATOMIC_ACQUIRE); i++) usleep(5000);
    uint64_t id = __atomic_load_n(&sc.last_id, __ATOMIC_ACQUIRE);
    CU_ASSERT_FATAL(id != 0);
    CU_ASSERT_EQUAL(ug_server_hold_label(sc.srv, "flush-queue"), 0);
    int n = take_dump(sc.srv);
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT(json_ok(dump));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "{\"gate\":{\"state\":\"open\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"labels\":{\"flush-queue\":1}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"idle\":1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"handler\":1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"peer\":\"127.0.0.1:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"target\":\"/late-id?x=%22q\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"deferred\":true,\"streaming\":false,"
                                        "\"cancel_callback\":true"));
    CU_ASSERT_PTR_NULL(strstr(dump, "\"drain\":")); /* not before the gate closes */
    /* The counters of ug_stats, from the same table as the exposition. */
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "},\"stats\":{\"conns_accepted\":2,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"stale_completions\":0},\"loops\":["));
    char want_id[64];
    snprintf(want_id, sizeof want_id, "\"request\":{\"id\":%llu,", (unsigned long long)id);
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, want_id));
    /* One entry per connection. */
    int entries = 0;
    for (const char *p = dump; (p = strstr(p, "\"slot\":")); p++) entries++;
    CU_ASSERT_EQUAL(entries, 2);
    /* A loop's own thread would wait for itself. */
    int from_loop = 0;
    CU_ASSERT_EQUAL(ts_on_loop(&sc, dump_from_loop, &from_loop), 0);
    CU_ASSERT_EQUAL(from_loop, -EDEADLK);
    /* The drain: it waits for the deferred request and the hold; the deadline drops the
     * hold with a line naming it. */
    ug_shutdown_opts o = {.drain_timeout_ms = 400};
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    for (int i = 0; i < 1000 && ug_server_state(sc.srv) != UG_GATE_DRAINING; i++) usleep(2000);
    usleep(20000); /* every loop has seen the close */
    n = take_dump(sc.srv);
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT(json_ok(dump));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"state\":\"draining\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"drain\":{\"elapsed_ms\":"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"forcing\":false,\"connections_at_close\":2}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"phase\":\"draining\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"outstanding\":1,"));
    CU_ASSERT_EQUAL(ts_on_req_loop(&sc, id, answer_late_id, &id), 0);
    char body[64];
    CU_ASSERT_EQUAL(tu_read_response(busy, body, sizeof body, NULL), 200);
    ts_join(&sc);
    CU_ASSERT_EQUAL(sc.run_rc, 1); /* the hold was forced */
    CU_ASSERT_EQUAL(sc.report.holds_forced, 1);
    pthread_mutex_lock(&log_mu);
    CU_ASSERT_PTR_NOT_NULL(strstr(log_text, "dropped hold \"flush-queue\" (1 outstanding)"));
    CU_ASSERT_PTR_NULL(strstr(log_text, "unlabelled"));
    pthread_mutex_unlock(&log_mu);
    CU_ASSERT_EQUAL(ug_server_release_label(sc.srv, "flush-queue"), -EINVAL); /* dropped */
    /* After the run: every loop has ended, the dump says so. */
    n = take_dump(sc.srv);
    CU_ASSERT(n > 0 && json_ok(dump));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"state\":\"closed\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "{\"loop\":0,\"ended\":true}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"connections\":[]}"));
    hang_up(idle);
    hang_up(busy);
    ug_server_free(sc.srv);
}

/* Before the run the loops take no part (a post would wait for a run that may never come). */
static void test_dump_not_running(void) {
    srv_ctx sc;
    ts_create(&sc, NULL);
    CU_ASSERT(take_dump(sc.srv) > 0);
    CU_ASSERT(json_ok(dump));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "{\"loop\":0,\"not_started\":true}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"connections\":[]}"));
    char *p = NULL;
    CU_ASSERT_EQUAL(ug_server_debug_json(sc.srv, 0, NULL, NULL), -EINVAL);
    CU_ASSERT_EQUAL(ug_server_debug_json(NULL, 0, &p, NULL), -EINVAL);
    ug_server_free(sc.srv);
}

static void test_hold_labels(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    ug_server *s = sc.srv;
    CU_ASSERT_EQUAL(ug_server_hold_label(s, NULL), -EINVAL);
    CU_ASSERT_EQUAL(ug_server_hold_label(s, ""), -EINVAL);
    CU_ASSERT_EQUAL(ug_server_release_label(s, "none"), -EINVAL);
    CU_ASSERT_EQUAL(ug_server_hold_label(s, "a"), 0);
    CU_ASSERT_EQUAL(ug_server_hold_label(s, "a"), 0);
    char name[16];
    for (int i = 1; i < UG_HOLD_LABELS_MAX; i++) {
        snprintf(name, sizeof name, "l%d", i);
        CU_ASSERT_EQUAL(ug_server_hold_label(s, name), 0);
    }
    CU_ASSERT_EQUAL(ug_server_hold_label(s, "one-too-many"), -ENOSPC);
    CU_ASSERT_EQUAL(ug_server_hold(s), 0); /* unlabelled holds are not limited by labels */
    int n = take_dump(s);
    CU_ASSERT(n > 0 && json_ok(dump));
    char want[64];
    snprintf(want, sizeof want, "\"outstanding\":%d,", UG_HOLD_LABELS_MAX + 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, want));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"a\":2"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dump, "\"unlabelled\":1}"));
    for (int i = 1; i < UG_HOLD_LABELS_MAX; i++) {
        snprintf(name, sizeof name, "l%d", i);
        CU_ASSERT_EQUAL(ug_server_release_label(s, name), 0);
        CU_ASSERT_EQUAL(ug_server_release_label(s, name), -EINVAL);
    }
    CU_ASSERT_EQUAL(ug_server_release_label(s, "a"), 0);
    CU_ASSERT_EQUAL(ug_server_release_label(s, "a"), 0);
    CU_ASSERT_EQUAL(ug_server_release_label(s, "a"), -EINVAL);
    CU_ASSERT_EQUAL(ug_server_release(s), 0);
    CU_ASSERT_EQUAL(ug_server_release(s), -EINVAL);
    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.report.holds_forced, 0);
}

/* ---------------------------------------------------------------- the access log ---- */

static size_t read_file(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return n;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* A server with an access log into a fresh temporary file. */
typedef struct logged {
    char path[32];
    int lfd;
    srv_ctx sc;
    ug_access_log *log;
} logged;

static void logged_start(logged *l, ug_config *cfg) {
    snprintf(l->path, sizeof l->path, "/tmp/ugate-access-XXXXXX");
    l->lfd = mkstemp(l->path);
    CU_ASSERT_FATAL(l->lfd >= 0);
    ts_create(&l->sc, cfg);
    CU_ASSERT_EQUAL(ug_access_log_create(&l->log, l->sc.srv, -1), -EINVAL);
    CU_ASSERT_EQUAL_FATAL(ug_access_log_create(&l->log, l->sc.srv, l->lfd), 0);
    ts_run(&l->sc);
}

/* Drain, then free the log (which writes what is left) and the server. */
static void logged_stop(logged *l) {
    ts_drain(&l->sc);
    CU_ASSERT_EQUAL(ug_access_log_dropped(l->log), 0);
    CU_ASSERT_EQUAL(ug_access_log_free(l->log), 0);
    ug_server_free(l->sc.srv);
}

static void logged_remove(logged *l) {
    close(l->lfd);
    unlink(l->path);
}

static void test_access_log(void) {
    logged l;
    logged_start(&l, NULL);
    const char *path = l.path;
    srv_ctx sc = l.sc;
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    get(fd,
        "GET /path/a%20b?q=1 HTTP/1.1\r\nHost: t\r\nReferer: http://r.example/\r\n"
        "User-Agent: agent \"quoted\"\r\n\r\n",
        200);
    get(fd, "GET /nope HTTP/1.0\r\n\r\n", 404);
    hang_up(fd);
    fd = tu_connect(sc.port);
    get(fd, BAD, 400);
    hang_up(fd);
    /* A user agent of 600 bytes past ASCII: escaped, cut at 512 with "...", the line whole. */
    static char big[700];
    int off = snprintf(big, sizeof big, "GET /x HTTP/1.1\r\nHost: t\r\nUser-Agent: ");
    memset(big + off, 0x80, 600);
    snprintf(big + off + 600, sizeof big - (size_t)off - 600, "\r\n\r\n");
    fd = tu_connect(sc.port);
    get(fd, big, 404);
    hang_up(fd);
    /* No more traffic: the lines must still reach the file within about a second. */
    static char text[16384];
    uint64_t t0 = tu_now_ms();
    while (tu_now_ms() - t0 < 3000 && (read_file(path, text, sizeof text), count_lines(text) < 4))
        usleep(20000);
    CU_ASSERT_EQUAL(count_lines(text), 4);
    char esc[1 + 512 * 4 + sizeof "...\" 0.0"] = "\"";
    for (int i = 0; i < 512; i++) strcat(esc, "\\x80");
    strcat(esc, "...\" 0.0");
    CU_ASSERT_PTR_NOT_NULL(strstr(text, esc));
    CU_ASSERT(tu_now_ms() - t0 < 2500);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "127.0.0.1 - - ["));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, " +0000] \"GET /path/a%20b?q=1 HTTP/1.1\" 200 "));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"http://r.example/\" \"agent \\x22quoted\\x22\" 0.0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"GET /nope HTTP/1.0\" 404 "));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "] \"-\" 400 ")); /* refused in its head */
    logged_stop(&l);
    logged_remove(&l);
}

/* Requests refused at the header and body timeouts (408) are logged from what was read of
 * them, before the input is dropped (the views point into it). */
static void test_access_log_timeouts(void) {
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.read_header_timeout_ms = 200;
    cfg.body_timeout_ms = 200;
    logged l;
    logged_start(&l, &cfg);
    static const char BODY_CUT[] = "POST /echo HTTP/1.1\r\nHost: t\r\nUser-Agent: slow-body\r\n"
                                   "Content-Length: 1000\r\n\r\n0123456789";
    static const char HEAD_CUT[] = "GET /head-cut HTTP/1.1\r\nHost: t\r\n";
    int a = tu_connect(l.sc.port), b = tu_connect(l.sc.port);
    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    CU_ASSERT_EQUAL(tu_send_all(a, BODY_CUT, sizeof BODY_CUT - 1), 0);
    CU_ASSERT_EQUAL(tu_send_all(b, HEAD_CUT, sizeof HEAD_CUT - 1), 0);
    char body[64];
    CU_ASSERT_EQUAL(tu_read_response(a, body, sizeof body, NULL), 408);
    CU_ASSERT_EQUAL(tu_read_response(b, body, sizeof body, NULL), 408);
    hang_up(a);
    hang_up(b);
    logged_stop(&l);
    static char text[4096];
    read_file(l.path, text, sizeof text);
    CU_ASSERT_EQUAL(count_lines(text), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"POST /echo HTTP/1.1\" 408 "));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"-\" \"slow-body\" 0.2"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "] \"-\" 408 ")); /* its head never ended */
    logged_remove(&l);
}

/* Lines buffered when the run ends are written by ug_access_log_free. */
static void test_access_log_flush_at_free(void) {
    logged l;
    logged_start(&l, NULL);
    int fd = tu_connect(l.sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    for (int i = 0; i < 50; i++) get(fd, GET_ROOT, 200);
    hang_up(fd);
    logged_stop(&l);
    static char text[16384];
    read_file(l.path, text, sizeof text);
    CU_ASSERT_EQUAL(count_lines(text), 50);
    logged_remove(&l);
}

/* ug_config.request_ids: the client's id echoed when valid, else one generated (unique),
 * on every response the server gives for a dispatched request, in the completion hook's
 * view and at the end of the access log's line. */
static char seen_rid[8][UG_REQUEST_ID_MAX + 1];
static int nseen_rid;
static void on_done_rid(const ug_request *req, const ug_completion *info, void *user) {
    (void)info;
    (void)user;
    ug_str r = ug_req_request_id(req);
    pthread_mutex_lock(&rec_mu);
    if (nseen_rid < 8)
        snprintf(seen_rid[nseen_rid++], sizeof seen_rid[0], "%.*s", (int)r.len, r.ptr ? r.ptr : "");
    pthread_mutex_unlock(&rec_mu);
}

static int count_rid(void) { /* the hook writes it on the loops */
    pthread_mutex_lock(&rec_mu);
    int n = nseen_rid;
    pthread_mutex_unlock(&rec_mu);
    return n;
}

static void header_of(const char *hdrs, const char *name, char *out, size_t cap) {
    out[0] = '\0';
    const char *p = hdrs ? strcasestr(hdrs, name) : NULL;
    if (!p) return;
    p += strlen(name);
    while (*p == ':' || *p == ' ') p++;
    size_t n = strcspn(p, "\r\n");
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
}

static void test_request_ids(void) {
    pthread_mutex_lock(&rec_mu);
    nseen_rid = 0;
    pthread_mutex_unlock(&rec_mu);
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.request_ids = 1;
    cfg.handler_timeout_ms = 200;
    srv_ctx sc;
    ts_create(&sc, &cfg);
    CU_ASSERT_EQUAL(ug_server_on_complete(sc.srv, on_done_rid, NULL), 0);
    ts_run(&sc);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    char body[64], rid[256], gen1[256], gen2[256];
    const char *hdrs;
    static const char WITH[] = "GET / HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, WITH, sizeof WITH - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 200);
    header_of(hdrs, "X-Request-Id", rid, sizeof rid);
    CU_ASSERT_STRING_EQUAL(rid, "abc-123");
    CU_ASSERT_EQUAL(tu_send_all(fd, GET_ROOT, sizeof GET_ROOT - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 200);
    header_of(hdrs, "X-Request-Id", gen1, sizeof gen1);
    CU_ASSERT_EQUAL(strlen(gen1), strlen("0123456789abcdef-0123456789abcdef"));
    /* invalid (a space): generated instead, and not the same as the last one; a 404 too */
    static const char BAD_ID[] = "GET /nope HTTP/1.1\r\nHost: t\r\nX-Request-Id: a b\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, BAD_ID, sizeof BAD_ID - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 404);
    header_of(hdrs, "X-Request-Id", gen2, sizeof gen2);
    CU_ASSERT_EQUAL(strlen(gen2), strlen(gen1));
    CU_ASSERT(strcmp(gen1, gen2) != 0);
    /* a client id with a quote in it is not taken */
    static const char QUOTE_ID[] = "GET / HTTP/1.1\r\nHost: t\r\nX-Request-Id: a\"b\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, QUOTE_ID, sizeof QUOTE_ID - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 200);
    header_of(hdrs, "X-Request-Id", rid, sizeof rid);
    CU_ASSERT_EQUAL(strlen(rid), strlen(gen1));
    hang_up(fd);
    /* the core's own answers carry it once: a handler that forgot to answer (500), one that
     * timed out (503); a request refused by the parser has none */
    fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    static const char FORGET[] = "GET /forget HTTP/1.1\r\nHost: t\r\nX-Request-Id: f-1\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, FORGET, sizeof FORGET - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 500);
    header_of(hdrs, "X-Request-Id", rid, sizeof rid);
    CU_ASSERT_STRING_EQUAL(rid, "f-1");
    CU_ASSERT_PTR_NULL(strcasestr(strcasestr(hdrs, "X-Request-Id") + 1, "X-Request-Id"));
    hang_up(fd);
    fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    static const char LATE[] = "GET /late-id HTTP/1.1\r\nHost: t\r\nX-Request-Id: t-1\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(fd, LATE, sizeof LATE - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 503);
    header_of(hdrs, "X-Request-Id", rid, sizeof rid);
    CU_ASSERT_STRING_EQUAL(rid, "t-1");
    CU_ASSERT_PTR_NULL(strcasestr(strcasestr(hdrs, "X-Request-Id") + 1, "X-Request-Id"));
    hang_up(fd);
    fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(tu_send_all(fd, BAD, sizeof BAD - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 400);
    CU_ASSERT_PTR_NULL(strcasestr(hdrs, "X-Request-Id"));
    hang_up(fd);
    for (int i = 0; i < 1000 && count_rid() < 7; i++) usleep(5000);
    pthread_mutex_lock(&rec_mu);
    CU_ASSERT_EQUAL(nseen_rid, 7);
    CU_ASSERT_STRING_EQUAL(seen_rid[4], "f-1");
    CU_ASSERT_STRING_EQUAL(seen_rid[5], "t-1");
    CU_ASSERT_STRING_EQUAL(seen_rid[6], ""); /* refused by the parser: none */
    CU_ASSERT_STRING_EQUAL(seen_rid[0], "abc-123");
    CU_ASSERT_STRING_EQUAL(seen_rid[1], gen1);
    CU_ASSERT_STRING_EQUAL(seen_rid[2], gen2);
    pthread_mutex_unlock(&rec_mu);
    ts_stop(&sc);
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("observe", NULL, NULL);
    CU_add_test(s, "connection states, in order", test_conn_states);
    CU_add_test(s, "completions: how each request ended", test_completions);
    CU_add_test(s, "the live dump, open and draining", test_debug_dump);
    CU_add_test(s, "the live dump of a server not running", test_dump_not_running);
    CU_add_test(s, "labelled holds", test_hold_labels);
    CU_add_test(s, "the access log", test_access_log);
    CU_add_test(s, "the access log flushed at free", test_access_log_flush_at_free);
    CU_add_test(s, "request ids", test_request_ids);
    CU_add_test(s, "the access log at the header and body timeouts", test_access_log_timeouts);
}

static void free_dump(void) {
    free(dump);
    dump = NULL;
}

int main(int argc, char **argv) {
    ts_init(argc, argv);
    atexit(free_dump);
    return tu_main(register_suites, 120);
}
