/* Responses: status line, the per-second Date/Server block, framing, streamed bodies.
 * Everything is appended to the connection's output buffer; conn.c sends it, so responses
 * to one read's worth of pipelined requests leave in one send. */
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define STREAM_QUEUE_MAX (8u << 20)

/* The Server line is written once (ug__std_hdrs_init); the Date line after it, once a
 * second. */
/* UTC calendar fields of a Unix time by arithmetic (H. Hinnant's civil_from_days): gmtime_r
 * takes glibc's process-wide time zone lock, and this runs on the loops. */
void ug__gmtime(int64_t sec, struct tm *tm) {
    int64_t days = sec / 86400, rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    memset(tm, 0, sizeof *tm);
    tm->tm_hour = (int)(rem / 3600);
    tm->tm_min = (int)(rem % 3600 / 60);
    tm->tm_sec = (int)(rem % 60);
    tm->tm_wday = (int)((days % 7 + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                    /* March = 0 */
    int64_t month = mp < 10 ? mp + 3 : mp - 9;                           /* [1, 12] */
    tm->tm_mday = (int)(doy - (153 * mp + 2) / 5 + 1);
    tm->tm_mon = (int)month - 1;
    tm->tm_year = (int)(yoe + era * 400 + (month <= 2) - 1900);
}

void ug__date_refresh(ug__loop *lp, int64_t sec) {
    struct tm tm;
    char date[UG__DATE_LEN + 1];
    size_t n = 0;
    /* IMF-fixdate in English whatever the process's locale (strftime's %a and %b follow
     * LC_TIME). */
    static const char days[][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    ug__gmtime(sec, &tm);
    if (tm.tm_year + 1900 <= 9999) {
        int k = snprintf(date, sizeof date, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
                         tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                         tm.tm_sec);
        if (k > 0) n = (size_t)k;
    }
    lp->date_sec = sec;
    char *p = lp->std_hdrs + lp->server_line_len;
    if (n != UG__DATE_LEN) { /* a year beyond 9999: no Date rather than a wrong one */
        lp->std_hdrs_len = lp->server_line_len;
        return;
    }
    memcpy(p, "Date: ", sizeof("Date: ") - 1);
    memcpy(p + sizeof("Date: ") - 1, date, UG__DATE_LEN);
    memcpy(p + sizeof("Date: ") - 1 + UG__DATE_LEN, "\r\n", sizeof("\r\n") - 1);
    lp->std_hdrs_len = lp->server_line_len + (uint32_t)UG__DATE_LINE_LEN;
}

void ug__std_hdrs_init(ug__loop *lp) {
    const char *name = lp->srv->server_name_copy;
    size_t n = name ? strlen(name) : 0; /* validated: at most UG_SERVER_NAME_MAX */
    char *p = lp->std_hdrs;
    if (name) {
        memcpy(p, "Server: ", sizeof("Server: ") - 1);
        memcpy(p + sizeof("Server: ") - 1, name, n);
        memcpy(p + sizeof("Server: ") - 1 + n, "\r\n", sizeof("\r\n") - 1);
        lp->server_line_len = (uint32_t)(sizeof("Server: \r\n") - 1 + n);
    } else {
        lp->server_line_len = 0;
    }
    lp->std_hdrs_len = lp->server_line_len;
    lp->date_sec = -1;
}

int ug__buf_reserve(ug__buf *b, size_t extra) {
    size_t need = (size_t)b->len + extra;
    if (need <= b->cap) return 0;
    if (need > UINT32_MAX / 2) return -ENOMEM;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need) cap *= 2;
    char *p = ug__realloc(b->p, cap);
    if (!p) return -ENOMEM;
    b->p = p;
    b->cap = (uint32_t)cap;
    return 0;
}

int ug__buf_append(ug__buf *b, const void *data, size_t len) {
    if (ug__buf_reserve(b, len)) return -ENOMEM;
    memcpy(b->p + b->len, data, len);
    b->len += (uint32_t)len;
    return 0;
}

void ug__buf_free(ug__buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* The buffer that takes appends: the one not in flight. */
static ug__buf *out_buf(struct ug_request *req) {
    return &req->out[req->sending == 0 ? 1 : 0];
}

/* A bounds-checked appender. It writes only what fits and counts everything, so one write
 * pass either fits, or says exactly how much room the same pieces need: a head is sized from
 * what it writes, never from a constant. */
typedef struct head_writer {
    char *p;
    size_t len, cap;
} head_writer;

static void hw_put(head_writer *w, const void *s, size_t n) {
    if (n && w->len <= w->cap && n <= w->cap - w->len) memcpy(w->p + w->len, s, n);
    w->len += n;
}
#define HW_LIT(w, lit) hw_put((w), (lit), sizeof(lit) - 1)

static void hw_u64(head_writer *w, uint64_t v) {
    char tmp[UG__U64_DIGITS];
    size_t n = sizeof tmp;
    do tmp[--n] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    hw_put(w, tmp + n, sizeof tmp - n);
}

static void hw_status_line(head_writer *w, int status) {
    switch (status) { /* the common ones without formatting */
    case 200:
        HW_LIT(w, "HTTP/1.1 200 OK\r\n");
        return;
    case 404:
        HW_LIT(w, "HTTP/1.1 404 Not Found\r\n");
        return;
    default:
        break;
    }
    HW_LIT(w, "HTTP/1.1 ");
    hw_u64(w, (uint64_t)status);
    HW_LIT(w, " ");
    const char *reason = ug__http_reason(status);
    hw_put(w, reason, strlen(reason));
    HW_LIT(w, "\r\n");
}

/* Whether this response must end the connection; sets CLOSE_AFTER when it does. In lame
 * duck every response says close, so load balancers move the client elsewhere. During a
 * drain, and after the client's EOF, the pipelined requests already received are all
 * answered: only the response to the last one buffered says close. */
static int must_close(struct ug_request *req) {
    ug__conn *c = req->conn;
    int gate = ug__gate_state(req->loop->srv);
    /* A streamed body not read to its end: what is left of it is never read. */
    int close_it = !req->keep_alive || (c->flags & UG_CF_CLOSE_AFTER) ||
                   gate == UG_GATE_LAME_DUCK || ug__body_open(req);
    /* The gate state too: loop 0 may have closed the gate since this loop's last turn
     * marked its connections. */
    if (!close_it && ((c->flags & (UG_CF_DRAIN | UG_CF_PEER_EOF)) || gate >= UG_GATE_DRAINING))
        close_it = req->body == UG_BODY_BUFFERED
                       ? req->in.len - req->in_off <= req->http.consumed && req->parked.len == 0
                       : req->parked.len <= req->http.consumed;
    if (close_it) c->flags |= UG_CF_CLOSE_AFTER;
    return close_it;
}

/* How a response's body is delimited. */
enum framing {
    FRAME_LENGTH,  /* Content-Length */
    FRAME_CHUNKED, /* Transfer-Encoding: chunked (streaming to HTTP/1.1) */
    FRAME_EOF,     /* the connection closing (streaming to HTTP/1.0) */
    FRAME_NONE,    /* a status without a body (1xx, 204, 304): no framing header at all */
};

static void hw_head(head_writer *w, const struct ug_request *req, int status, const char *ctype,
                    size_t ctlen, enum framing fr, uint64_t body_len, int close_it) {
    const ug__loop *lp = req->loop;
    hw_status_line(w, status);
    /* The Server and Date lines, unless the handler gave its own. */
    if (!(req->own_hdrs & UG_OWN_SERVER)) hw_put(w, lp->std_hdrs, lp->server_line_len);
    if (!(req->own_hdrs & UG_OWN_DATE))
        hw_put(w, lp->std_hdrs + lp->server_line_len, lp->std_hdrs_len - lp->server_line_len);
    if (ctype) {
        HW_LIT(w, "Content-Type: ");
        hw_put(w, ctype, ctlen);
        HW_LIT(w, "\r\n");
    }
    if (fr == FRAME_LENGTH) {
        HW_LIT(w, "Content-Length: ");
        hw_u64(w, body_len);
        HW_LIT(w, "\r\n");
    } else if (fr == FRAME_CHUNKED) {
        HW_LIT(w, "Transfer-Encoding: chunked\r\n");
    }
    if (close_it)
        HW_LIT(w, "Connection: close\r\n");
    else if (req->http.http_minor == 0)
        HW_LIT(w, "Connection: keep-alive\r\n");
    hw_put(w, req->resp_hdrs.p, req->resp_hdrs.len);
    HW_LIT(w, "\r\n");
}

/* Append the status line and headers to ob, with room for extra more bytes after them. */
static int put_head(struct ug_request *req, ug__buf *ob, int status, const char *ctype,
                    enum framing fr, uint64_t body_len, size_t extra) {
    ug__loop *lp = req->loop;
    size_t ctlen = ctype ? strlen(ctype) : 0;
    req->resp_base = req->conn->bytes_out + req->out[0].len + req->out[1].len - req->sent;
    if (fr == FRAME_EOF) req->conn->flags |= UG_CF_CLOSE_AFTER;
    int close_it = must_close(req);
    /* A first guess that fits every usual head; if it does not, the pass says exactly what
     * does, and the second pass fits by construction. */
    size_t room = UG__HEAD_GUESS + lp->std_hdrs_len + ctlen + req->resp_hdrs.len + extra;
    head_writer w;
    for (;;) {
        if (ug__buf_reserve(ob, room)) return -ENOMEM;
        w = (head_writer){ob->p + ob->len, 0, ob->cap - ob->len - extra};
        hw_head(&w, req, status, ctype, ctlen, fr, body_len, close_it);
        if (w.len <= w.cap) break;
        room = w.len + extra;
    }
    ob->len += (uint32_t)w.len;
    req->resp_hdrs.len = 0;
    req->own_hdrs = 0;
    req->status = (uint16_t)status;
    unsigned cls = (unsigned)status / 100;
    if (cls < 6) UG_STAT_INC(lp, responses[cls]);
    if (status >= UG__STATUS_MIN && status <= UG__STATUS_MAX) UG_GAUGE_ADD(lp->codes[status], 1u);
    return 0;
}

static int can_respond(const struct ug_request *req) {
    return req && (req->rstate == UG_RS_HANDLER || req->rstate == UG_RS_DEFERRED);
}

/* The element answering, still inside its call, has passed the request on: what it passed
 * it to holds it (deferred, or answering itself). */
static int passed_on(const struct ug_request *req) {
    return req->chain_running != UG__CHAIN_NONE && req->chain_running < req->chain_at;
}

/* Why req cannot be answered: a second answer to a request still in its chain is misuse
 * (counted and logged); a stream in progress is -EINVAL, an answered request -EALREADY. */
static int refused(struct ug_request *req) {
    if (!req) return -EINVAL;
    if (req->id && (req->rstate == UG_RS_ANSWERED || req->rstate == UG_RS_STREAMING))
        ug__chain_misuse(req, UG__CHAIN_NONE, "answered twice (the second answer is dropped)");
    else if (passed_on(req))
        ug__chain_misuse(req, req->chain_running,
                         "answered after passing the request on (the answer is dropped)");
    return req->rstate == UG_RS_STREAMING ? -EINVAL : -EALREADY;
}

/* field-name = token */
static int valid_name(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!ug__http_is_tchar((unsigned char)*s)) return 0;
    return 1;
}

/* field-value: no CTL but HTAB (so no CR, LF or NUL: no header injection). */
static int valid_value(const char *s) {
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == 0x7f || (ch < 0x20 && ch != '\t')) return 0;
    }
    return 1;
}

static int name_is(const char *name, const char *lit) {
    return strcasecmp(name, lit) == 0;
}

/* ---------------------------------------------------------------- the header list ----
 * Until the head is written, the response headers are the list resp_hdrs holds: one
 * "Name: value\r\n" line each, in the order added, so that the head is one copy and
 * middleware or a handler can still read, replace and remove them. */

typedef struct hdr_line {
    uint32_t start, end; /* the line, CRLF included */
    ug_str name, value;
} hdr_line;

/* The line starting at off, or 0 at the end. */
static int hdr_next(const ug__buf *b, uint32_t off, hdr_line *h) {
    if (off >= b->len) return 0;
    const char *p = b->p + off, *end = b->p + b->len;
    const char *colon = memchr(p, ':', (size_t)(end - p));
    const char *crlf = memchr(p, '\r', (size_t)(end - p));
    assert(colon && crlf && colon < crlf && crlf + 1 < end); /* ug_resp_header wrote it */
    h->start = off;
    h->end = (uint32_t)(crlf + 2 - b->p);
    h->name = (ug_str){p, (size_t)(colon - p)};
    h->value = (ug_str){colon + 2, (size_t)(crlf - colon - 2)};
    return 1;
}

static int hdr_named(const hdr_line *h, const char *name) {
    return strlen(name) == h->name.len && strncasecmp(h->name.ptr, name, h->name.len) == 0;
}

/* A handler's own Server or Date replaces the server's: whether the list has one. */
static void own_hdrs_scan(struct ug_request *req) {
    hdr_line h;
    req->own_hdrs = 0;
    for (uint32_t off = 0; hdr_next(&req->resp_hdrs, off, &h); off = h.end) {
        if (hdr_named(&h, "Server")) req->own_hdrs |= UG_OWN_SERVER;
        if (hdr_named(&h, "Date")) req->own_hdrs |= UG_OWN_DATE;
    }
}

/* The checks every header added passes: a token name, a value without CR, LF, NUL or other
 * controls but HTAB, and none of the framing, which is the server's (a second
 * Content-Length, Transfer-Encoding or Connection would contradict the one it writes, and
 * is how responses get smuggled). */
static int hdr_acceptable(const char *name, const char *value) {
    if (!name || !value || !valid_name(name) || !valid_value(value)) return 0;
    return !name_is(name, "Content-Length") && !name_is(name, "Transfer-Encoding") &&
           !name_is(name, "Connection");
}

ug_str ug_resp_header_get(const ug_request *req, const char *name) {
    hdr_line h;
    if (req && name && can_respond(req))
        for (uint32_t off = 0; hdr_next(&req->resp_hdrs, off, &h); off = h.end)
            if (hdr_named(&h, name)) return h.value;
    return (ug_str){NULL, 0};
}

size_t ug_resp_header_count(const ug_request *req) {
    hdr_line h;
    size_t n = 0;
    if (req && can_respond(req))
        for (uint32_t off = 0; hdr_next(&req->resp_hdrs, off, &h); off = h.end) n++;
    return n;
}

int ug_resp_header_at(const ug_request *req, size_t i, ug_str *name, ug_str *value) {
    hdr_line h;
    if (req && can_respond(req))
        for (uint32_t off = 0; hdr_next(&req->resp_hdrs, off, &h); off = h.end)
            if (i-- == 0) {
                if (name) *name = h.name;
                if (value) *value = h.value;
                return 0;
            }
    return -ERANGE;
}

int ug_resp_header_remove(ug_request *req, const char *name) {
    if (!can_respond(req)) return -EALREADY;
    if (!name) return -EINVAL;
    ug__buf *b = &req->resp_hdrs;
    hdr_line h;
    int removed = 0;
    for (uint32_t off = 0; hdr_next(b, off, &h);) {
        if (!hdr_named(&h, name)) {
            off = h.end;
            continue;
        }
        memmove(b->p + h.start, b->p + h.end, b->len - h.end);
        b->len -= h.end - h.start;
        removed++;
    }
    if (removed) own_hdrs_scan(req);
    return removed;
}

int ug_resp_header_set(ug_request *req, const char *name, const char *value) {
    if (!can_respond(req)) return -EALREADY;
    if (!hdr_acceptable(name, value)) return -EINVAL;
    /* Room first: a set that fails leaves the list as it was. */
    if (ug__buf_reserve(&req->resp_hdrs, strlen(name) + strlen(value) + sizeof(": \r\n") - 1))
        return -ENOMEM;
    ug_resp_header_remove(req, name);
    return ug_resp_header(req, name, value);
}

int ug_resp_header(ug_request *req, const char *name, const char *value) {
    if (!can_respond(req)) return -EALREADY;
    if (!hdr_acceptable(name, value)) return -EINVAL;
    size_t nl = strlen(name), vl = strlen(value);
    if (ug__buf_reserve(&req->resp_hdrs, nl + vl + sizeof(": \r\n") - 1)) return -ENOMEM;
    ug__buf_put(&req->resp_hdrs, name, nl);
    ug__buf_put(&req->resp_hdrs, ": ", sizeof(": ") - 1);
    ug__buf_put(&req->resp_hdrs, value, vl);
    ug__buf_put(&req->resp_hdrs, "\r\n", sizeof("\r\n") - 1);
    /* A handler's own Server or Date replaces the server's. */
    if (name_is(name, "Server")) req->own_hdrs |= UG_OWN_SERVER;
    if (name_is(name, "Date")) req->own_hdrs |= UG_OWN_DATE;
    return 0;
}

/* RFC 9110 15: three digits, 100 to 599 (1xx are the server's own). */
static int valid_status(int status) {
    return status >= 200 && status <= 599;
}

/* 1xx, 204 and 304 responses have no body (RFC 9112 6.3). */
static int status_has_body(int status) {
    return status >= 200 && status != 204 && status != 304;
}

int ug_resp_send(ug_request *req, int status, const char *content_type, const void *body,
                 size_t len) {
    if (!can_respond(req) || passed_on(req)) return refused(req);
    if (!valid_status(status) || (len && !body) || len > UINT32_MAX / 4) return -EINVAL;
    if (content_type && !valid_value(content_type)) return -EINVAL;
    int has_body = status_has_body(status);
    size_t send_len = (has_body && !req->head) ? len : 0;
    ug__buf *ob = out_buf(req);
    int rc = put_head(req, ob, status, content_type, has_body ? FRAME_LENGTH : FRAME_NONE, len,
                      send_len);
    if (rc) return rc;
    if (send_len) ug__buf_put(ob, body, send_len); /* room reserved by put_head */
    req->rstate = UG_RS_ANSWERED;
    ug__request_answered(req);
    return 0;
}

int ug_resp_start(ug_request *req, int status, const char *content_type) {
    if (!can_respond(req) || passed_on(req)) return refused(req);
    if (!valid_status(status)) return -EINVAL;
    if (content_type && !valid_value(content_type)) return -EINVAL;
    int has_body = status_has_body(status);
    req->chunked_out = has_body && req->http.http_minor >= 1;
    enum framing fr = !has_body ? FRAME_NONE : req->chunked_out ? FRAME_CHUNKED : FRAME_EOF;
    int rc = put_head(req, out_buf(req), status, content_type, fr, 0, 0);
    if (rc) return rc;
    if (!has_body) req->head = 1; /* writes are dropped, like for HEAD */
    req->rstate = UG_RS_STREAMING;
    ug__mark_dirty(req->loop, req->conn);
    return 0;
}

/* "%zx\r\n" of the largest chunk, and the CRLF after its data. */
#define CHUNK_FRAMING_MAX (sizeof("ffffffffffffffff\r\n") - 1 + sizeof("\r\n") - 1)

int ug_resp_write(ug_request *req, const void *data, size_t len) {
    if (!req) return -EINVAL;
    if (req->rstate != UG_RS_STREAMING) return req->rstate == UG_RS_ANSWERED ? -EALREADY : -EINVAL;
    if (!len || req->head) return 0;
    if (!data) return -EINVAL;
    if ((size_t)req->out[0].len + req->out[1].len + len > STREAM_QUEUE_MAX) return -ENOBUFS;
    ug__buf *ob = out_buf(req);
    if (ug__buf_reserve(ob, len + CHUNK_FRAMING_MAX)) return -ENOMEM;
    if (req->chunked_out) {
        char size_line[CHUNK_FRAMING_MAX];
        int n = snprintf(size_line, sizeof size_line, "%zx\r\n", len);
        ug__buf_put(ob, size_line, (size_t)n);
    }
    ug__buf_put(ob, data, len);
    if (req->chunked_out) ug__buf_put(ob, "\r\n", sizeof("\r\n") - 1);
    ug__mark_dirty(req->loop, req->conn);
    return 0;
}

int ug_resp_end(ug_request *req) {
    if (!req) return -EINVAL;
    if (req->rstate != UG_RS_STREAMING) return req->rstate == UG_RS_ANSWERED ? -EALREADY : -EINVAL;
    if (req->chunked_out && !req->head) {
        int rc = ug__buf_append(out_buf(req), "0\r\n\r\n", sizeof("0\r\n\r\n") - 1);
        if (rc) return rc;
    }
    req->rstate = UG_RS_ANSWERED;
    ug__request_answered(req);
    return 0;
}

int ug__resp_error(struct ug_request *req, int status) {
    req->conn->flags |= UG_CF_CLOSE_AFTER;
    const char *reason = ug__http_reason(status);
    size_t n = strlen(reason);
    req->resp_hdrs.len = 0;
    req->own_hdrs = 0;
    ug__request_id_header(req); /* a dispatched request's 500 still says which it was */
    size_t send_len = req->head ? 0 : n + 1;
    ug__buf *ob = out_buf(req);
    int rc = put_head(req, ob, status, "text/plain", FRAME_LENGTH, n + 1, send_len);
    if (rc) return rc;
    if (send_len) { /* the body is the reason phrase and a newline; room reserved */
        ug__buf_put(ob, reason, n);
        ug__buf_put(ob, "\n", 1);
    }
    return 0;
}

int ug__resp_continue(struct ug_request *req) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    UG_STAT_INC(req->loop, responses[1]);
    return ug__buf_append(out_buf(req), cont, sizeof cont - 1);
}
