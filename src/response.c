/* Responses: status line, the per-second Date/Server block, framing, streamed bodies.
 * Everything is appended to the connection's output buffer; conn.c sends it, so responses
 * to one read's worth of pipelined requests leave in one send. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STREAM_QUEUE_MAX (8u << 20)

void ug__date_refresh(ug_server *srv, int64_t sec) {
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    char date[40];
    size_t n = strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    date[n] = 0;
    srv->date_sec = sec;
    int len;
    if (srv->server_name_copy)
        len = snprintf(srv->std_hdrs, sizeof srv->std_hdrs, "Server: %s\r\nDate: %s\r\n",
                       srv->server_name_copy, date);
    else
        len = snprintf(srv->std_hdrs, sizeof srv->std_hdrs, "Date: %s\r\n", date);
    srv->std_hdrs_len = (len > 0 && (size_t)len < sizeof srv->std_hdrs) ? (uint32_t)len : 0;
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

static char *put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}
#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *put_u64(char *p, uint64_t v) {
    char tmp[24];
    int n = 0;
    do tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n) *p++ = tmp[--n];
    return p;
}

static char *put_status_line(char *p, int status) {
    switch (status) { /* the common ones without formatting */
    case 200:
        return PUT_LIT(p, "HTTP/1.1 200 OK\r\n");
    case 404:
        return PUT_LIT(p, "HTTP/1.1 404 Not Found\r\n");
    default:
        break;
    }
    p = PUT_LIT(p, "HTTP/1.1 ");
    p = put_u64(p, (uint64_t)status);
    *p++ = ' ';
    const char *reason = ug__http_reason(status);
    p = put(p, reason, strlen(reason));
    return PUT_LIT(p, "\r\n");
}

/* Whether this response must end the connection; sets CLOSE_AFTER when it does. In lame
 * duck every response says close, so load balancers move the client elsewhere. During a
 * drain the pipelined requests already received are all answered: only the response to the
 * last one buffered says close. */
static int must_close(struct ug_request *req) {
    ug__conn *c = req->conn;
    int close_it = !req->keep_alive || (c->flags & (UG_CF_CLOSE_AFTER | UG_CF_PEER_EOF)) ||
                   atomic_load_explicit(&req->srv->gate, memory_order_relaxed) == UG_GATE_LAME_DUCK;
    if (!close_it && (c->flags & UG_CF_DRAIN))
        close_it = req->in.len - req->in_off <= req->http.consumed && req->parked.len == 0;
    if (close_it) c->flags |= UG_CF_CLOSE_AFTER;
    return close_it;
}

/* Status line and headers. body_len >= 0: Content-Length framing; -1: chunked; -2: the
 * body is delimited by the connection closing (HTTP/1.0 streaming). */
static int put_head(struct ug_request *req, ug__buf *ob, int status, const char *ctype,
                    int64_t body_len, size_t extra) {
    ug_server *srv = req->srv;
    size_t ctlen = ctype ? strlen(ctype) : 0;
    size_t need = 96 + srv->std_hdrs_len + ctlen + req->resp_hdrs.len + extra;
    if (ug__buf_reserve(ob, need)) return -ENOMEM;
    char *p = ob->p + ob->len;
    p = put_status_line(p, status);
    p = put(p, srv->std_hdrs, srv->std_hdrs_len);
    if (ctype) {
        p = PUT_LIT(p, "Content-Type: ");
        p = put(p, ctype, ctlen);
        p = PUT_LIT(p, "\r\n");
    }
    if (body_len >= 0) {
        if (status != 204 && !(status >= 100 && status < 200)) {
            p = PUT_LIT(p, "Content-Length: ");
            p = put_u64(p, (uint64_t)body_len);
            p = PUT_LIT(p, "\r\n");
        }
    } else if (body_len == -1) {
        p = PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
    } else if (body_len == -2) {
        req->conn->flags |= UG_CF_CLOSE_AFTER;
    } /* -3: a status that has no body (204, 304): no framing at all */
    if (must_close(req))
        p = PUT_LIT(p, "Connection: close\r\n");
    else if (req->http.http_minor == 0)
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    if (req->resp_hdrs.len) p = put(p, req->resp_hdrs.p, req->resp_hdrs.len);
    p = PUT_LIT(p, "\r\n");
    ob->len = (uint32_t)(p - ob->p);
    req->resp_hdrs.len = 0;
    req->status = (uint16_t)status;
    unsigned cls = (unsigned)status / 100;
    if (cls < 6) srv->stats.responses[cls]++;
    return 0;
}

static int can_respond(const struct ug_request *req) {
    return req && (req->rstate == UG_RS_HANDLER || req->rstate == UG_RS_DEFERRED);
}

static int valid_token(const char *s, int allow_space) {
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\r' || ch == '\n' || ch == 0x7f || (ch < 0x20 && ch != '\t')) return 0;
        if (!allow_space && (ch == ' ' || ch == '\t' || ch == ':')) return 0;
    }
    return 1;
}

int ug_resp_header(ug_request *req, const char *name, const char *value) {
    if (!can_respond(req)) return -EALREADY;
    if (!name || !value || !*name || !valid_token(name, 0) || !valid_token(value, 1))
        return -EINVAL;
    size_t nl = strlen(name), vl = strlen(value);
    if (ug__buf_reserve(&req->resp_hdrs, nl + vl + 4)) return -ENOMEM;
    char *p = req->resp_hdrs.p + req->resp_hdrs.len;
    p = put(p, name, nl);
    p = PUT_LIT(p, ": ");
    p = put(p, value, vl);
    p = PUT_LIT(p, "\r\n");
    req->resp_hdrs.len = (uint32_t)(p - req->resp_hdrs.p);
    return 0;
}

static int valid_status(int status) {
    return status >= 200 && status <= 999;
}

int ug_resp_send(ug_request *req, int status, const char *content_type, const void *body,
                 size_t len) {
    if (!can_respond(req)) return req && req->rstate == UG_RS_STREAMING ? -EINVAL : -EALREADY;
    if (!valid_status(status) || (len && !body)) return -EINVAL;
    if (content_type && !valid_token(content_type, 1)) return -EINVAL;
    int nobody = req->head || status == 204 || status == 304;
    ug__buf *ob = out_buf(req);
    int rc = put_head(req, ob, status, content_type, (int64_t)len, nobody ? 0 : len);
    if (rc) return rc;
    if (!nobody && len) {
        memcpy(ob->p + ob->len, body, len);
        ob->len += (uint32_t)len;
    }
    req->rstate = UG_RS_ANSWERED;
    ug__request_answered(req);
    return 0;
}

int ug_resp_start(ug_request *req, int status, const char *content_type) {
    if (!can_respond(req)) return req && req->rstate == UG_RS_STREAMING ? -EINVAL : -EALREADY;
    if (!valid_status(status)) return -EINVAL;
    if (content_type && !valid_token(content_type, 1)) return -EINVAL;
    int nobody = status == 204 || status == 304;
    req->chunked_out = !nobody && req->http.http_minor >= 1;
    int64_t framing = nobody ? -3 : req->chunked_out ? -1 : -2;
    int rc = put_head(req, out_buf(req), status, content_type, framing, 0);
    if (rc) return rc;
    if (nobody) req->head = 1; /* writes are dropped, like for HEAD */
    req->rstate = UG_RS_STREAMING;
    ug__mark_dirty(req->srv, req->conn);
    return 0;
}

int ug_resp_write(ug_request *req, const void *data, size_t len) {
    if (!req) return -EINVAL;
    if (req->rstate != UG_RS_STREAMING) return req->rstate == UG_RS_ANSWERED ? -EALREADY : -EINVAL;
    if (!len || req->head) return 0;
    if (!data) return -EINVAL;
    if ((size_t)req->out[0].len + req->out[1].len + len > STREAM_QUEUE_MAX) return -ENOBUFS;
    ug__buf *ob = out_buf(req);
    if (ug__buf_reserve(ob, len + 24)) return -ENOMEM;
    if (req->chunked_out) ob->len += (uint32_t)sprintf(ob->p + ob->len, "%zx\r\n", len);
    memcpy(ob->p + ob->len, data, len);
    ob->len += (uint32_t)len;
    if (req->chunked_out) {
        memcpy(ob->p + ob->len, "\r\n", 2);
        ob->len += 2;
    }
    ug__mark_dirty(req->srv, req->conn);
    return 0;
}

int ug_resp_end(ug_request *req) {
    if (!req) return -EINVAL;
    if (req->rstate != UG_RS_STREAMING) return req->rstate == UG_RS_ANSWERED ? -EALREADY : -EINVAL;
    if (req->chunked_out && !req->head) {
        int rc = ug__buf_append(out_buf(req), "0\r\n\r\n", 5);
        if (rc) return rc;
    }
    req->rstate = UG_RS_ANSWERED;
    ug__request_answered(req);
    return 0;
}

int ug__resp_error(struct ug_request *req, int status) {
    req->conn->flags |= UG_CF_CLOSE_AFTER;
    const char *reason = ug__http_reason(status);
    char body[64];
    int n = snprintf(body, sizeof body, "%s\n", reason);
    if (n < 0 || (size_t)n >= sizeof body) n = 0;
    req->resp_hdrs.len = 0;
    int head = req->head;
    ug__buf *ob = out_buf(req);
    int rc = put_head(req, ob, status, "text/plain", n, (size_t)n);
    if (rc) return rc;
    if (!head) {
        memcpy(ob->p + ob->len, body, (size_t)n);
        ob->len += (uint32_t)n;
    }
    return 0;
}

int ug__resp_continue(struct ug_request *req) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    req->srv->stats.responses[1]++;
    return ug__buf_append(out_buf(req), cont, sizeof cont - 1);
}
