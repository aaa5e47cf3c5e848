/* Responses (response.c), through the mock backend: status line and headers, framing (HEAD,
 * 204, chunked, close-delimited), header validation, Connection handling for HTTP/1.0 and
 * 1.1, the streaming queue bound. */
#include "mock_backend.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static ug_server *srv;
static mock_conn cn;

/* The handler of the current test (every path routes to it). */
static ug_handler_result (*g_fn)(ug_request *req);
static struct {
    uint64_t id;
    int rc[16];
    int n;
    int calls;
} g;

static ug_handler_result h_dispatch(ug_request *req, void *user) {
    (void)user;
    g.calls++;
    return g_fn(req);
}

static void start_cfg(ug_config *cfg, ug_handler_result (*fn)(ug_request *)) {
    memset(&g, 0, sizeof g);
    memset(&cn, 0, sizeof cn);
    cn.peer = -1;
    g_fn = fn;
    mock_reset();
    mock_auto(1, 1); /* sends complete in full at once; cancels complete at once */
    srv = NULL;
    CU_ASSERT_FATAL(mock_server_create(&srv, cfg) == 0);
    ug_route(srv, NULL, "/", UG_ROUTE_PREFIX, h_dispatch, NULL);
    mock_run(srv);
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
}

static void start(ug_handler_result (*fn)(ug_request *)) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    start_cfg(&cfg, fn);
}

static void finish(void) {
    mock_stop(srv, NULL);
    ug_server_free(srv);
    srv = NULL;
    CU_ASSERT_EQUAL(mock_buffers_out(), 0);
    CU_ASSERT_EQUAL(mock_nerrors(), 0);
    for (unsigned i = 0; i < mock_nerrors(); i++) fprintf(stderr, "  %s\n", mock_error(i));
    mock_conn_close(&cn);
}

/* Everything sent on fd by send operations at index >= from, concatenated (sends complete
 * in full in these tests, so nothing is repeated). *len gets its length; free() it. */
static char *sent_since(int fd, unsigned from, size_t *len) {
    size_t n = 0;
    for (unsigned i = from; i < mock_nops(); i++) {
        mock_op *o = mock_op_at(i);
        if (o->kind == MK_SEND && o->fd == fd) n += o->len;
    }
    char *b = malloc(n + 1);
    if (!b) abort();
    size_t off = 0;
    for (unsigned i = from; i < mock_nops(); i++) {
        mock_op *o = mock_op_at(i);
        if (o->kind == MK_SEND && o->fd == fd) {
            memcpy(b + off, o->data, o->len);
            off += o->len;
        }
    }
    b[n] = 0;
    *len = n;
    return b;
}

/* Send req, let the loop answer, return what was sent (free()). */
static char *exchange(const char *req, size_t *len) {
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, req, UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    return sent_since(cn.fd, from, len);
}

static int has_line(const char *head, const char *line) {
    char pat[512];
    snprintf(pat, sizeof pat, "\r\n%s\r\n", line);
    return strstr(head, pat) != NULL;
}

/* ---------------------------------------------------------------- handlers ---- */

static ug_handler_result h_plain(ug_request *req) {
    g.rc[g.n++] = ug_resp_header(req, "X-Test", "yes");
    g.rc[g.n++] = ug_resp_send(req, 200, "text/plain", "hello", 5);
    return UG_DONE;
}

static ug_handler_result h_status(ug_request *req) {
    ug_str p = ug_req_path(req);
    int status = atoi(p.ptr + 1); /* "/201" */
    g.rc[g.n++] = ug_resp_send(req, status, NULL, "body!", 5);
    return UG_DONE;
}

/* ---------------------------------------------------------------- tests ---- */

static void check_date(const char *date) {
    CU_ASSERT_PTR_NOT_NULL_FATAL(date);
    /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    CU_ASSERT_EQUAL(strlen(date), 29);
    static const char *days = "SunMonTueWedThuFriSat";
    static const char *months = "JanFebMarAprMayJunJulAugSepOctNovDec";
    char day[4] = {0}, mon[4] = {0};
    int dd, yyyy, hh, mi, ss;
    char gmt[4] = {0};
    int n =
        sscanf(date, "%3c, %2d %3c %4d %2d:%2d:%2d %3c", day, &dd, mon, &yyyy, &hh, &mi, &ss, gmt);
    CU_ASSERT_EQUAL_FATAL(n, 8);
    CU_ASSERT(strstr(days, day) != NULL && (strstr(days, day) - days) % 3 == 0);
    CU_ASSERT(strstr(months, mon) != NULL && (strstr(months, mon) - months) % 3 == 0);
    CU_ASSERT_STRING_EQUAL(gmt, "GMT");
    CU_ASSERT(date[3] == ',' && date[4] == ' ' && date[7] == ' ' && date[11] == ' ' &&
              date[16] == ' ' && date[19] == ':' && date[22] == ':' && date[25] == ' ');
    /* And it is now. */
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_mday = dd;
    tm.tm_mon = (int)((strstr(months, mon) - months) / 3);
    tm.tm_year = yyyy - 1900;
    tm.tm_hour = hh;
    tm.tm_min = mi;
    tm.tm_sec = ss;
    time_t t = timegm(&tm);
    time_t now = time(NULL);
    CU_ASSERT(t <= now + 2 && t >= now - 5);
    struct tm back;
    gmtime_r(&t, &back);
    CU_ASSERT_EQUAL((int)(strstr(days, day) - days) / 3, back.tm_wday);
}

static void test_status_line_and_headers(void) {
    start(h_plain);
    size_t len;
    char *out = exchange("GET /x HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    CU_ASSERT_EQUAL(g.rc[0], 0);
    CU_ASSERT_EQUAL(g.rc[1], 0);
    CU_ASSERT(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17));
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "hello");
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Date"), 1);
    check_date(mock_resp_header(&r, "Date"));
    CU_ASSERT(has_line(r.head, "Server: ugate"));
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Server"), 1);
    CU_ASSERT(has_line(r.head, "Content-Length: 5"));
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Content-Length"), 1);
    CU_ASSERT(has_line(r.head, "Content-Type: text/plain"));
    CU_ASSERT(has_line(r.head, "X-Test: yes"));
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Transfer-Encoding"), 0);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Connection"), 0); /* 1.1 keep-alive default */
    mock_resp_free(&r);
    free(out);

    /* The next response on the connection carries the same standard headers, and the
     * headers added for the first request are gone. */
    out = exchange("GET /y HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "X-Test"), 1);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Date"), 1);
    mock_resp_free(&r);
    free(out);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.responses[2], 2);
    finish();
}

static void test_other_statuses(void) {
    start(h_status);
    static const struct {
        int status;
        const char *line;
    } cases[] = {
        {201, "HTTP/1.1 201 Created\r\n"},
        {404, "HTTP/1.1 404 Not Found\r\n"},
        {418, "HTTP/1.1 418 I'm a teapot\r\n"},
        {503, "HTTP/1.1 503 Service Unavailable\r\n"},
        {299, "HTTP/1.1 299 "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char req[128];
        snprintf(req, sizeof req, "GET /%d HTTP/1.1\r\nHost: t\r\n\r\n", cases[i].status);
        size_t len;
        char *out = exchange(req, &len);
        CU_ASSERT(!strncmp(out, cases[i].line, strlen(cases[i].line)));
        mock_resp r;
        CU_ASSERT(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
        CU_ASSERT_EQUAL(r.status, cases[i].status);
        CU_ASSERT_STRING_EQUAL(r.body, "body!");
        CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Content-Type"), 0); /* NULL type */
        mock_resp_free(&r);
        free(out);
    }
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.responses[2], 2);
    CU_ASSERT_EQUAL(st.responses[4], 2);
    CU_ASSERT_EQUAL(st.responses[5], 1);
    finish();
}

static ug_handler_result h_bad_status(ug_request *req) {
    g.rc[g.n++] = ug_resp_send(req, 99, NULL, NULL, 0);
    g.rc[g.n++] = ug_resp_send(req, 600, NULL, NULL, 0);
    g.rc[g.n++] = ug_resp_send(req, 200, NULL, NULL, 3); /* len without a body */
    g.rc[g.n++] = ug_resp_send(req, 200, "text/plain\r\nX-Evil: 1", "x", 1);
    g.rc[g.n++] = ug_resp_send(req, 200, NULL, NULL, 0);
    return UG_DONE;
}

static void test_invalid_send_arguments(void) {
    start(h_bad_status);
    size_t len;
    char *out = exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    CU_ASSERT_EQUAL(g.rc[0], -EINVAL);
    CU_ASSERT_EQUAL(g.rc[1], -EINVAL);
    CU_ASSERT_EQUAL(g.rc[2], -EINVAL);
    CU_ASSERT_EQUAL(g.rc[3], -EINVAL);
    CU_ASSERT_EQUAL(g.rc[4], 0);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(has_line(r.head, "Content-Length: 0"));
    CU_ASSERT(strstr(out, "X-Evil") == NULL);
    mock_resp_free(&r);
    free(out);
    finish();
}

static void test_no_server_header_when_unnamed(void) {
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.server_name = NULL;
    start_cfg(&cfg, h_plain);
    size_t len;
    char *out = exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Server"), 0);
    check_date(mock_resp_header(&r, "Date"));
    mock_resp_free(&r);
    free(out);
    finish();
}

static void test_head_suppresses_body(void) {
    start(h_plain);
    size_t len;
    /* HEAD, then a pipelined GET: the framing must let the client find the second one. */
    char *out =
        exchange("HEAD /x HTTP/1.1\r\nHost: t\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    mock_resp r;
    long n = mock_parse_resp(out, len, 1, 0, &r);
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(has_line(r.head, "Content-Length: 5"));
    CU_ASSERT_EQUAL(strlen(r.head), (size_t)n); /* nothing after the header section */
    mock_resp_free(&r);
    long n2 = mock_parse_resp(out + n, len - (size_t)n, 0, 0, &r);
    CU_ASSERT_EQUAL(n2, (long)len - n);
    CU_ASSERT_STRING_EQUAL(r.body, "hello");
    mock_resp_free(&r);
    free(out);
    finish();
}

static ug_handler_result h_204(ug_request *req) {
    g.rc[g.n++] = ug_resp_send(req, 204, "text/plain", "ignored", 7);
    return UG_DONE;
}

static void test_204_no_content_length(void) {
    start(h_204);
    size_t len;
    char *out =
        exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    CU_ASSERT_EQUAL(g.rc[0], 0);
    CU_ASSERT(!strncmp(out, "HTTP/1.1 204 No Content\r\n", 25));
    mock_resp r;
    long n = mock_parse_resp(out, len, 0, 0, &r);
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Content-Length"), 0);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Transfer-Encoding"), 0);
    CU_ASSERT_EQUAL(strlen(r.head), (size_t)n);
    mock_resp_free(&r);
    CU_ASSERT(mock_parse_resp(out + n, len - (size_t)n, 0, 0, &r) == (long)len - n);
    CU_ASSERT_EQUAL(r.status, 204);
    mock_resp_free(&r);
    CU_ASSERT(strstr(out, "ignored") == NULL);
    free(out);
    finish();
}

static ug_handler_result h_header_checks(ug_request *req) {
    g.rc[g.n++] = ug_resp_header(req, "", "v");                        /* 0: empty name */
    g.rc[g.n++] = ug_resp_header(req, "X-A\r\nX-Evil", "v");           /* 1: CRLF in name */
    g.rc[g.n++] = ug_resp_header(req, "X-A", "v\r\nX-Evil: 1");        /* 2: CRLF in value */
    g.rc[g.n++] = ug_resp_header(req, "X-A", "v\nX-Evil: 1");          /* 3: LF in value */
    g.rc[g.n++] = ug_resp_header(req, "X-A", "v\rX-Evil: 1");          /* 4: CR in value */
    g.rc[g.n++] = ug_resp_header(req, "X-A\n", "v");                   /* 5: LF in name */
    g.rc[g.n++] = ug_resp_header(req, NULL, "v");                      /* 6 */
    g.rc[g.n++] = ug_resp_header(req, "X-A", NULL);                    /* 7 */
    g.rc[g.n++] = ug_resp_header(req, "X A", "v");                     /* 8: space in name */
    g.rc[g.n++] = ug_resp_header(req, "X:A", "v");                     /* 9: colon in name */
    g.rc[g.n++] = ug_resp_header(req, "X-Ctl", "a\x01z");              /* 10: control character */
    g.rc[g.n++] = ug_resp_header(req, "X-Ok", "fine value\twith tab"); /* 11: valid */
    g.rc[g.n++] = ug_resp_header(req, "X-Empty", "");                  /* 12: empty value is fine */
    g.rc[g.n++] = ug_resp_send(req, 200, "text/plain", "ok", 2);       /* 13 */
    return UG_DONE;
}

/* The header list: read, replace, remove before the head is written; the head then has
 * exactly what the list held, in order; a handler's own Server is dropped with its removal. */
static int list_checks_ok;
static ug_handler_result h_header_list(ug_request *req) {
    int ok = 1;
    ok &= ug_resp_header(req, "X-A", "1") == 0 && ug_resp_header(req, "x-b", "2") == 0 &&
          ug_resp_header(req, "X-A", "3") == 0 && ug_resp_header(req, "Server", "mine") == 0;
    ug_str v = ug_resp_header_get(req, "x-a");
    ok &= v.len == 1 && v.ptr[0] == '1'; /* the first, case-insensitively */
    ok &= ug_resp_header_count(req) == 4;
    ug_str n;
    ok &= ug_resp_header_at(req, 1, &n, &v) == 0 && n.len == 3 && !strncmp(n.ptr, "x-b", 3) &&
          v.len == 1 && v.ptr[0] == '2';
    ok &= ug_resp_header_at(req, 4, &n, &v) == -ERANGE;
    ok &= ug_resp_header_set(req, "X-A", "replaced") == 0; /* both X-A go, one comes */
    ok &= ug_resp_header_count(req) == 3;
    v = ug_resp_header_get(req, "X-A");
    ok &= v.len == 8 && !strncmp(v.ptr, "replaced", 8);
    ok &= ug_resp_header_set(req, "X-A", "v\r\nX-Evil: 1") == -EINVAL; /* and nothing changes */
    ok &= ug_resp_header_set(req, "Content-Length", "9") == -EINVAL;
    ok &= ug_resp_header_count(req) == 3;
    ok &= ug_resp_header_remove(req, "SERVER") == 1; /* the server's Server comes back */
    ok &= ug_resp_header_remove(req, "X-None") == 0;
    ok &= ug_resp_header_remove(req, NULL) == -EINVAL;
    ok &= ug_resp_header_get(req, "Server").ptr == NULL;
    ok &= ug_resp_send(req, 200, "text/plain", "ok", 2) == 0;
    /* after the head: the list is gone */
    ok &= ug_resp_header_count(req) == 0 && ug_resp_header_get(req, "x-b").ptr == NULL;
    ok &= ug_resp_header_set(req, "X-Late", "1") == -EALREADY;
    ok &= ug_resp_header_remove(req, "x-b") == -EALREADY;
    list_checks_ok = ok;
    return UG_DONE;
}

static void test_resp_header_list(void) {
    start(h_header_list);
    size_t len;
    list_checks_ok = 0;
    char *out = exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    CU_ASSERT(list_checks_ok);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT(has_line(r.head, "x-b: 2"));
    CU_ASSERT(has_line(r.head, "X-A: replaced"));
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "X-A"), 1);
    CU_ASSERT(has_line(r.head, "Server: ugate")); /* the handler's own was removed */
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Server"), 1);
    CU_ASSERT(strstr(r.head, "x-b: 2\r\nX-A: replaced\r\n") != NULL); /* the list's order */
    mock_resp_free(&r);
    free(out);
    finish();
}

static void test_resp_header_validation(void) {
    start(h_header_checks);
    size_t len;
    char *out = exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    CU_ASSERT_EQUAL_FATAL(g.n, 14);
    for (int i = 0; i <= 10; i++) {
        if (g.rc[i] != -EINVAL) fprintf(stderr, "ug_resp_header case %d returned %d\n", i, g.rc[i]);
        CU_ASSERT_EQUAL(g.rc[i], -EINVAL);
    }
    CU_ASSERT_EQUAL(g.rc[11], 0);
    CU_ASSERT_EQUAL(g.rc[12], 0);
    CU_ASSERT_EQUAL(g.rc[13], 0);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT(has_line(r.head, "X-Ok: fine value\twith tab"));
    CU_ASSERT(strstr(out, "X-Evil") == NULL);
    CU_ASSERT(strstr(out, "X-A") == NULL);
    CU_ASSERT(strstr(out, "X-Ctl") == NULL);
    mock_resp_free(&r);
    free(out);
    finish();
}

static ug_handler_result h_twice(ug_request *req) {
    g.rc[g.n++] = ug_resp_send(req, 200, "text/plain", "one", 3);
    g.rc[g.n++] = ug_resp_send(req, 200, "text/plain", "two", 3);
    g.rc[g.n++] = ug_resp_header(req, "X-Late", "1");
    g.rc[g.n++] = ug_resp_start(req, 200, NULL);
    return UG_DONE;
}

static void test_second_send_ealready(void) {
    start(h_twice);
    size_t len;
    char *out = exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    CU_ASSERT_EQUAL(g.rc[0], 0);
    CU_ASSERT_EQUAL(g.rc[1], -EALREADY);
    CU_ASSERT_EQUAL(g.rc[2], -EALREADY);
    CU_ASSERT_EQUAL(g.rc[3], -EALREADY);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT_STRING_EQUAL(r.body, "one");
    mock_resp_free(&r);
    CU_ASSERT(strstr(out, "X-Late") == NULL);
    free(out);
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.handler_no_response, 0);
    finish();
}

static void test_http10_keep_alive(void) {
    start(h_plain);
    size_t len;
    char *out = exchange("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &len);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT_STRING_EQUAL(r.body, "hello");
    CU_ASSERT(has_line(r.head, "Connection: keep-alive"));
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Connection"), 1);
    mock_resp_free(&r);
    free(out);
    CU_ASSERT(mock_fd_open(&cn));
    CU_ASSERT_EQUAL(tu_read_response(cn.peer, NULL, 0, NULL), 200);
    CU_ASSERT(!mock_peer_eof(&cn));
    /* A second request on the same connection. */
    out = exchange("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &len);
    CU_ASSERT(len > 0 && strstr(out, "\r\nConnection: keep-alive\r\n") != NULL);
    free(out);
    finish();
}

static void test_http10_close(void) {
    start(h_plain);
    size_t len;
    char *out = exchange("GET / HTTP/1.0\r\n\r\n", &len);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT_STRING_EQUAL(r.body, "hello");
    CU_ASSERT(has_line(r.head, "Connection: close"));
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Connection"), 1);
    mock_resp_free(&r);
    free(out);
    /* After the response: our FIN (the connection lingers, reading, until the client's). */
    char body[64];
    CU_ASSERT_EQUAL(tu_read_response(cn.peer, body, sizeof body, NULL), 200);
    CU_ASSERT(mock_peer_eof(&cn));
    /* Anything more the client sends is read and dropped. */
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, "GET / HTTP/1.0\r\n\r\n", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(mock_count(MK_SEND, -1, from), 0);
    mock_complete(cn.recv_ud, 0, 0);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT(!mock_fd_open(&cn));
    ug_stats st;
    mock_stats(srv, &st);
    CU_ASSERT_EQUAL(st.conns_closed, 1);
    CU_ASSERT_EQUAL(st.requests, 1);
    finish();
}

static void test_http11_connection_close(void) {
    start(h_plain);
    size_t len;
    char *out = exchange(
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n",
        &len);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len); /* one response */
    CU_ASSERT(has_line(r.head, "Connection: close"));
    mock_resp_free(&r);
    free(out);
    CU_ASSERT_EQUAL(g.calls, 1);
    CU_ASSERT_EQUAL(tu_read_response(cn.peer, NULL, 0, NULL), 200);
    CU_ASSERT(mock_peer_eof(&cn));
    finish();
}

static ug_handler_result h_stream(ug_request *req) {
    g.rc[g.n++] = ug_resp_header(req, "X-Stream", "1");
    g.rc[g.n++] = ug_resp_start(req, 200, "text/plain");
    g.rc[g.n++] = ug_resp_write(req, "hello", 5);
    g.rc[g.n++] = ug_resp_write(req, "", 0);
    g.rc[g.n++] = ug_resp_write(req, " world, and a longer chunk", 26);
    g.rc[g.n++] = ug_resp_end(req);
    return UG_DONE;
}

static void test_stream_chunked(void) {
    start(h_stream);
    size_t len;
    char *out = exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    for (int i = 0; i < 6; i++) CU_ASSERT_EQUAL(g.rc[i], 0);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(r.chunked);
    CU_ASSERT_EQUAL(r.clen, -1);
    CU_ASSERT(has_line(r.head, "X-Stream: 1"));
    CU_ASSERT(has_line(r.head, "Content-Type: text/plain"));
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Connection"), 0);
    CU_ASSERT_STRING_EQUAL(r.body, "hello world, and a longer chunk");
    /* The exact framing: one chunk per write, lower-case hex sizes, the last chunk. */
    const char *body = out + strlen(r.head);
    CU_ASSERT_STRING_EQUAL(body, "5\r\nhello\r\n1a\r\n world, and a longer chunk\r\n0\r\n\r\n");
    mock_resp_free(&r);
    free(out);
    /* Keep-alive holds after a chunked response. */
    CU_ASSERT_EQUAL(tu_read_response(cn.peer, NULL, 0, NULL), 200);
    CU_ASSERT(!mock_peer_eof(&cn));
    out = exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    CU_ASSERT(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    mock_resp_free(&r);
    free(out);
    finish();
}

static void test_stream_http10_close_delimited(void) {
    start(h_stream);
    size_t len;
    char *out = exchange("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &len);
    for (int i = 0; i < 6; i++) CU_ASSERT_EQUAL(g.rc[i], 0);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 0, 1, &r) == (long)len);
    CU_ASSERT(!r.chunked);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Transfer-Encoding"), 0);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Content-Length"), 0);
    CU_ASSERT(has_line(r.head, "Connection: close"));
    CU_ASSERT_STRING_EQUAL(r.body, "hello world, and a longer chunk");
    mock_resp_free(&r);
    free(out);
    /* The body ends with the connection: the client reads it to EOF. */
    char body[128];
    CU_ASSERT_EQUAL(tu_read_response(cn.peer, body, sizeof body, NULL), 200);
    CU_ASSERT_STRING_EQUAL(body, "hello world, and a longer chunk");
    finish();
}

static ug_handler_result h_stream_head(ug_request *req) {
    g.rc[g.n++] = ug_resp_start(req, 200, "text/plain");
    g.rc[g.n++] = ug_resp_write(req, "hello", 5);
    g.rc[g.n++] = ug_resp_end(req);
    return UG_DONE;
}

static void test_stream_head_no_body(void) {
    start(h_stream_head);
    size_t len;
    char *out = exchange("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    for (int i = 0; i < 3; i++) CU_ASSERT_EQUAL(g.rc[i], 0);
    mock_resp r;
    CU_ASSERT_FATAL(mock_parse_resp(out, len, 1, 0, &r) == (long)len);
    CU_ASSERT_EQUAL(strlen(r.head), len);
    mock_resp_free(&r);
    free(out);
    finish();
}

/* A deferred stream: written from the loop later, send by send; ug_req_find works until the
 * end; a request pipelined behind it is answered after it. */
struct sw {
    uint64_t id;
    const char *data;
    int end;
    int found;
    int rc;
};

static void stream_step(ug_server *s, void *user) {
    struct sw *w = user;
    ug_request *req = ug_req_find(s, w->id);
    w->found = req != NULL;
    if (!req) return;
    w->rc = w->end ? ug_resp_end(req) : ug_resp_write(req, w->data, strlen(w->data));
}

static ug_handler_result h_stream_later(ug_request *req) {
    ug_str p = ug_req_path(req);
    if (p.len == 2 && p.ptr[1] == 'b') {
        g.rc[g.n++] = ug_resp_send(req, 200, NULL, "b", 1);
        return UG_DONE;
    }
    g.id = ug_req_id(req);
    g.rc[g.n++] = ug_resp_start(req, 200, NULL);
    return UG_LATER;
}

static void test_stream_deferred(void) {
    start(h_stream_later);
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud,
                  "GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n",
                  UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL(g.calls, 1);                          /* /b waits behind the stream */
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1); /* the head went out at once */
    const char *parts[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        struct sw w = {g.id, parts[i], 0, 0, -1};
        CU_ASSERT_EQUAL(mock_on_loop(srv, stream_step, &w), 0);
        CU_ASSERT(w.found);
        CU_ASSERT_EQUAL(w.rc, 0);
    }
    CU_ASSERT_EQUAL(g.calls, 1);
    struct sw e = {g.id, NULL, 1, 0, -1};
    CU_ASSERT_EQUAL(mock_on_loop(srv, stream_step, &e), 0);
    CU_ASSERT(e.found);
    CU_ASSERT_EQUAL(e.rc, 0);
    CU_ASSERT_EQUAL(g.calls, 2);
    struct sw after = {g.id, "x", 0, -1, -1};
    CU_ASSERT_EQUAL(mock_on_loop(srv, stream_step, &after), 0);
    CU_ASSERT_EQUAL(after.found, 0);
    size_t len;
    char *out = sent_since(cn.fd, from, &len);
    mock_resp r;
    long n = mock_parse_resp(out, len, 0, 0, &r);
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT_STRING_EQUAL(r.body, "onetwothree");
    mock_resp_free(&r);
    CU_ASSERT(mock_parse_resp(out + n, len - (size_t)n, 0, 0, &r) == (long)len - n);
    CU_ASSERT_STRING_EQUAL(r.body, "b");
    mock_resp_free(&r);
    free(out);
    finish();
}

/* The streaming queue is bounded: past 8 MiB queued unsent, -ENOBUFS until sends drain. */
static char *mib;

static ug_handler_result h_flood(ug_request *req) {
    g.id = ug_req_id(req);
    g.rc[g.n++] = ug_resp_start(req, 200, "application/octet-stream");
    int i;
    for (i = 0; i < 12; i++) {
        int rc = ug_resp_write(req, mib, 1u << 20);
        if (rc) {
            g.rc[g.n++] = rc;
            break;
        }
    }
    g.rc[g.n++] = i; /* writes accepted */
    return UG_LATER;
}

static void test_stream_queue_bound(void) {
    mib = malloc(1u << 20);
    CU_ASSERT_FATAL(mib != NULL);
    memset(mib, 'z', 1u << 20);
    start(h_flood);
    mock_auto(0, 1); /* sends stay in flight until the test completes them */
    mock_wire(0);    /* 8 MiB would not fit in the socketpair */
    unsigned from = mock_nops();
    mock_recv_str(cn.recv_ud, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", UG__CF_MORE);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    CU_ASSERT_EQUAL_FATAL(g.n, 3);
    CU_ASSERT_EQUAL(g.rc[0], 0);
    CU_ASSERT_EQUAL(g.rc[1], -ENOBUFS);
    CU_ASSERT_EQUAL(g.rc[2], 7); /* 7 MiB + the head queued; one more MiB would pass 8 */
    CU_ASSERT_EQUAL(mock_count(MK_SEND, cn.fd, from), 1);
    mock_op *s = mock_last(MK_SEND, cn.fd, from);
    CU_ASSERT(s->len > 7u * (1u << 20) && s->len <= 8u * (1u << 20));

    /* Still in flight: still full. A small write fits under the bound. */
    struct sw w = {g.id, NULL, 0, 0, 0};
    static char big[(1u << 20) + 1];
    memset(big, 'y', sizeof big - 1);
    w.data = big;
    CU_ASSERT_EQUAL(mock_on_loop(srv, stream_step, &w), 0);
    CU_ASSERT(w.found);
    CU_ASSERT_EQUAL(w.rc, -ENOBUFS);
    struct sw small = {g.id, "tiny", 0, 0, -1};
    CU_ASSERT_EQUAL(mock_on_loop(srv, stream_step, &small), 0);
    CU_ASSERT_EQUAL(small.rc, 0);

    /* The send completes: room again. */
    mock_complete_send(cn.fd, MOCK_ALL);
    CU_ASSERT_EQUAL(mock_sync(), 0);
    w.rc = -1;
    CU_ASSERT_EQUAL(mock_on_loop(srv, stream_step, &w), 0);
    CU_ASSERT_EQUAL(w.rc, 0);
    struct sw e = {g.id, NULL, 1, 0, -1};
    CU_ASSERT_EQUAL(mock_on_loop(srv, stream_step, &e), 0);
    CU_ASSERT_EQUAL(e.rc, 0);
    for (int i = 0; i < 8 && mock_pending_send(cn.fd); i++) {
        mock_complete_send(cn.fd, MOCK_ALL);
        mock_sync();
    }
    size_t len;
    char *out = sent_since(cn.fd, from, &len);
    mock_resp r;
    CU_ASSERT(mock_parse_resp(out, len, 0, 0, &r) == (long)len);
    CU_ASSERT_EQUAL(r.body_len, 7u * (1u << 20) + 4 + (1u << 20));
    mock_resp_free(&r);
    free(out);
    finish();
    free(mib);
    mib = NULL;
}

static ug_handler_result h_stream_204(ug_request *req) {
    g.rc[g.n++] = ug_resp_start(req, 204, NULL);
    g.rc[g.n++] = ug_resp_write(req, "x", 1);
    g.rc[g.n++] = ug_resp_end(req);
    return UG_DONE;
}

/* Regression (found by this suite): ug_resp_start(204) sends "Transfer-Encoding: chunked" and
 * ug_resp_end then appends the last-chunk "0\r\n\r\n" (plus any written chunks). A 204 has
 * no content and must not carry Transfer-Encoding (RFC 9112 6.1, RFC 9110 15.3.5): the client
 * stops after the header section and reads "0\r\n\r\n" as the start of the next response. */
static void test_stream_204_has_no_framing(void) {
    start(h_stream_204);
    size_t len;
    char *out = exchange("GET / HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    mock_resp r;
    long n = mock_parse_resp(out, len, 0, 0, &r);
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT_EQUAL(r.status, 204);
    CU_ASSERT_EQUAL(mock_resp_header_count(&r, "Transfer-Encoding"), 0);
    CU_ASSERT_EQUAL(n, (long)len); /* nothing after the header section */
    mock_resp_free(&r);
    free(out);
    finish();
}

/* ---------------------------------------------------------------- head writer ---- */

/* Every status × framing × close/keep-alive × HTTP/1.0/1.1, with the output buffer filled to
 * every level around a reallocation boundary before the head is written: the head writer
 * must size heads from what it writes (an overflow here is an ASan report; the landed code
 * overflowed by about 20 bytes). The pair "GET /fill?n=K" + target arrives in one receive,
 * so both responses go into the same output buffer, the target's head at fill level ~K. */
enum fill_mode { FM_SEND_EMPTY, FM_SEND_BODY, FM_STREAM, FM_HEAD, FM_MODES };

static char fill_bytes[4096];

static unsigned query_num(ug_request *req, const char *key) {
    ug_str v = ug_req_query_param(req, key);
    unsigned n = 0;
    for (size_t i = 0; v.ptr && i < v.len; i++) n = n * 10 + (unsigned)(v.ptr[i] - '0');
    return n;
}

static ug_handler_result h_fill(ug_request *req) {
    ug_str p = ug_req_path(req);
    if (p.len == 5 && !memcmp(p.ptr, "/fill", 5)) {
        unsigned n = query_num(req, "n");
        g.rc[0] |= ug_resp_send(req, 200, NULL, fill_bytes, n);
        return UG_DONE;
    }
    int status = (int)query_num(req, "s");
    unsigned mode = query_num(req, "m");
    int rc = 0;
    if (query_num(req, "h")) rc |= ug_resp_header(req, "X-Extra", "a fairly long header value");
    if (mode == FM_STREAM) {
        rc |= ug_resp_start(req, status, "application/x-something-long");
        rc |= ug_resp_write(req, "abc", 3);
        rc |= ug_resp_end(req);
    } else if (mode == FM_SEND_EMPTY) {
        rc |= ug_resp_send(req, status, NULL, NULL, 0);
    } else {
        rc |= ug_resp_send(req, status, "text/plain; charset=utf-8", "Hello, World!", 13);
    }
    g.rc[1] |= rc;
    return UG_DONE;
}

static unsigned digits(unsigned n) {
    unsigned d = 1;
    while (n >= 10) n /= 10, d++;
    return d;
}

/* One pair on a fresh connection; checks both responses. Returns 0 if all was well. */
static int fill_case(unsigned k, const char *target, int head, int minor, int closing, int status,
                     unsigned mode) {
    CU_ASSERT_FATAL(mock_accept(&cn, UG__CF_MORE) == 0);
    char req[512];
    snprintf(req, sizeof req,
             "GET /fill?n=%u HTTP/1.1\r\nHost: t\r\n\r\n%s %s HTTP/1.%d\r\nHost: t\r\n%s\r\n", k,
             head ? "HEAD" : "GET", target, minor, closing ? "Connection: close\r\n" : "");
    size_t len;
    char *out = exchange(req, &len);
    mock_resp r1, r2;
    long n1 = mock_parse_resp(out, len, 0, 0, &r1);
    int ok = n1 > 0 && r1.status == 200 && r1.body_len == k;
    if (n1 > 0) mock_resp_free(&r1);
    int streamed = mode == FM_STREAM;
    int eof_delim = streamed && minor == 0;
    long n2 = ok ? mock_parse_resp(out + n1, len - (size_t)n1, head, eof_delim, &r2) : -1;
    ok = ok && n2 == (long)len - n1 && r2.status == status && r2.minor == 1;
    if (ok) {
        int nobody = head || status == 204 || status == 304 || status / 100 == 1;
        int chunked = streamed && minor == 1 && !nobody;
        ok = r2.chunked == chunked;
        if (!nobody && !streamed) ok = ok && r2.clen == (mode == FM_SEND_EMPTY ? 0 : 13);
        if (nobody) ok = ok && r2.body_len == 0;
        /* It says close exactly when it must (asked, HTTP/1.0 without keep-alive, or a
         * close-delimited stream). */
        int must = closing || minor == 0 || eof_delim;
        const char *conn = mock_resp_header(&r2, "Connection");
        ok = ok && (must ? conn && !strcmp(conn, "close") : conn == NULL);
        mock_resp_free(&r2);
    }
    if (!ok)
        fprintf(stderr, "\n    fill %u, %s%s 1.%d close=%d mode=%u: bad responses (%zu bytes)\n", k,
                head ? "HEAD " : "", target, minor, closing, mode, len);
    free(out);
    mock_conn_close(&cn);
    mock_sync();
    return ok ? 0 : -1;
}

/* Fill levels so that the target head starts within [cap - 300, cap + 8] of each boundary:
 * the fill response is head0 + k bytes, head0 measured with k = 0. */
static void sweep(unsigned head0, unsigned step, const char *target, int head, int minor,
                  int closing, int status, unsigned mode, unsigned *cases, unsigned *bad) {
    static const unsigned caps[] = {1024, 2048};
    for (size_t b = 0; b < sizeof caps / sizeof caps[0]; b++) {
        for (unsigned lvl = caps[b] - 300; lvl <= caps[b] + 8; lvl += step) {
            if (lvl < head0 + 1) continue;
            unsigned k = lvl - head0;
            k -= digits(k) - 1;
            (*cases)++;
            *bad += fill_case(k, target, head, minor, closing, status, mode) != 0;
            if (*bad > 5) return;
        }
        step = step * 3; /* the second boundary more coarsely */
    }
}

/* head0: the fill response's length with an empty body. */
static unsigned fill_head0(void) {
    size_t len;
    char *out = exchange("GET /fill?n=0 HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    free(out);
    mock_conn_close(&cn);
    return (unsigned)len;
}

static void test_head_writer_fill_levels(void) {
    memset(fill_bytes, 'f', sizeof fill_bytes);
    static const int statuses[] = {200, 201, 202, 203, 204, 205, 206, 299, 301, 302, 303, 304, 305,
                                   307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410,
                                   411, 412, 413, 414, 415, 416, 417, 418, 421, 422, 423, 424, 425,
                                   426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 599};
    static const int longest[] = {203, 407, 431, 451, 505};
    unsigned cases = 0, bad = 0;
    char target[128];
    /* Every status, sent, keep-alive and close: one server each (the mock records every
     * operation of a server). */
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0] && bad <= 5; i++) {
        start(h_fill);
        unsigned head0 = fill_head0();
        for (int closing = 0; closing < 2; closing++) {
            snprintf(target, sizeof target, "/t?s=%d&m=%d", statuses[i], FM_SEND_BODY);
            sweep(head0, 13, target, 0, 1, closing, statuses[i], FM_SEND_BODY, &cases, &bad);
        }
        CU_ASSERT_EQUAL(g.rc[0], 0);
        CU_ASSERT_EQUAL(g.rc[1], 0);
        finish();
    }
    /* The longest reason phrases in every framing, version, close, with an extra header. */
    for (size_t i = 0; i < sizeof longest / sizeof longest[0] && bad <= 5; i++)
        for (unsigned mode = 0; mode < FM_MODES; mode++) {
            start(h_fill);
            unsigned head0 = fill_head0();
            unsigned m = mode == FM_HEAD ? FM_SEND_BODY : mode;
            for (int minor = 0; minor < 2; minor++)
                for (int closing = 0; closing < 2; closing++) {
                    snprintf(target, sizeof target, "/t?s=%d&m=%u&h=1", longest[i], m);
                    sweep(head0, 3, target, mode == FM_HEAD, minor, closing, longest[i], m, &cases,
                          &bad);
                }
            CU_ASSERT_EQUAL(g.rc[0], 0);
            CU_ASSERT_EQUAL(g.rc[1], 0);
            finish();
        }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(cases > 10000);
    fprintf(stderr, "(%u cases) ", cases);
}

/* server_name goes into every head: visible ASCII and inner spaces, at most
 * UG_SERVER_NAME_MAX bytes, or ug_server_create refuses it. */
static void test_server_name_checked(void) {
    static const char *bad[] = {"ugate\r\nX-Evil: 1", "a\nb", "a\tb", "", " ugate", "ugate ",
                                "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ug_config cfg;
        mock_base_cfg(&cfg);
        cfg.server_name = bad[i];
        mock_reset();
        ug_server *s = NULL;
        CU_ASSERT_EQUAL(mock_server_create(&s, &cfg), -EINVAL);
        CU_ASSERT_PTR_NULL(s);
    }
    char longest[UG_SERVER_NAME_MAX + 2];
    memset(longest, 'n', sizeof longest);
    longest[UG_SERVER_NAME_MAX + 1] = 0;
    ug_config cfg;
    mock_base_cfg(&cfg);
    cfg.server_name = longest;
    mock_reset();
    ug_server *s = NULL;
    CU_ASSERT_EQUAL(mock_server_create(&s, &cfg), -EINVAL);
    longest[UG_SERVER_NAME_MAX] = 0; /* exactly the longest allowed */
    CU_ASSERT_EQUAL(mock_server_create(&s, &cfg), 0);
    ug_server_free(s);
    cfg.server_name = "ugate/1.0 (linux)";
    CU_ASSERT_EQUAL(mock_server_create(&s, &cfg), 0);
    ug_server_free(s);
}

/* The Date cache's calendar arithmetic against the C library's, from 1900 to 9999 and at
 * the edges that break such code (leap days, century years, the epoch, before it). */
static void test_gmtime_arithmetic(void) {
    static const int64_t edges[] = {0,
                                    -1,
                                    86399,
                                    86400,
                                    951782400 /* 2000-02-29 */,
                                    4107456000 /* 2100-02-28 */,
                                    4107542400,
                                    -2208988800,
                                    253402300799 /* 9999-12-31 23:59:59 */};
    int bad = 0;
    for (size_t k = 0; k < sizeof edges / sizeof edges[0] + 200000; k++) {
        int64_t t = k < sizeof edges / sizeof edges[0]
                        ? edges[k]
                        : -2208988800 + (int64_t)(tu_rand() % (253402300799ull + 2208988800ull));
        time_t tt = (time_t)t;
        struct tm want, got;
        gmtime_r(&tt, &want);
        ug__gmtime(t, &got);
        if (want.tm_year != got.tm_year || want.tm_mon != got.tm_mon ||
            want.tm_mday != got.tm_mday || want.tm_hour != got.tm_hour ||
            want.tm_min != got.tm_min || want.tm_sec != got.tm_sec || want.tm_wday != got.tm_wday)
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("response", NULL, NULL);
    CU_add_test(s, "status line and headers", test_status_line_and_headers);
    CU_add_test(s, "the response header list", test_resp_header_list);
    CU_add_test(s, "UTC calendar arithmetic against gmtime_r", test_gmtime_arithmetic);
    CU_add_test(s, "other statuses", test_other_statuses);
    CU_add_test(s, "invalid ug_resp_send arguments", test_invalid_send_arguments);
    CU_add_test(s, "no Server header when unnamed", test_no_server_header_when_unnamed);
    CU_add_test(s, "server_name is checked", test_server_name_checked);
    CU_add_test(s, "HEAD suppresses the body", test_head_suppresses_body);
    CU_add_test(s, "204 has no Content-Length", test_204_no_content_length);
    CU_add_test(s, "ug_resp_header validation", test_resp_header_validation);
    CU_add_test(s, "second ug_resp_send: -EALREADY", test_second_send_ealready);
    CU_add_test(s, "HTTP/1.0 keep-alive", test_http10_keep_alive);
    CU_add_test(s, "HTTP/1.0 close", test_http10_close);
    CU_add_test(s, "HTTP/1.1 Connection: close", test_http11_connection_close);
    CU_add_test(s, "streaming: chunked framing", test_stream_chunked);
    CU_add_test(s, "streaming: HTTP/1.0 close-delimited", test_stream_http10_close_delimited);
    CU_add_test(s, "streaming: HEAD has no body", test_stream_head_no_body);
    CU_add_test(s, "streaming: deferred writes", test_stream_deferred);
    CU_add_test(s, "streaming: 8 MiB queue bound", test_stream_queue_bound);
    CU_add_test(s, "streamed 204 has no body framing", test_stream_204_has_no_framing);
    CU_add_test(s, "head writer: every status, framing, version at every fill level",
                test_head_writer_fill_levels);
}

int main(void) {
    return tu_main(register_suites, 60);
}
