/* Streamed request bodies (UG_ROUTE_STREAM_BODY): the request is dispatched at its head, and
 * its body is parsed from a buffer of its own, the context's 'parked' one, which takes every
 * byte that arrives while a request is live anyway (conn.c). Each piece is handed to the
 * handler's callback and dropped, so what is buffered is bounded by the reading pause
 * (conn.c), whatever the size of the body. The head stays alone in 'in': its views stay
 * valid through the whole body. */
#include "core.h"

#include <errno.h>
#include <string.h>

int ug__body_begin(ug__loop *lp, struct ug_request *ctx) {
    (void)lp;
    uint32_t head_end = ctx->in_off + ctx->http.header_bytes;
    uint32_t extra = ctx->in.len - head_end;
    /* The body's bytes that came with the head go in front of any already parked. */
    if (extra) {
        if (ug__buf_reserve(&ctx->parked, extra)) return -ENOMEM;
        memmove(ctx->parked.p + extra, ctx->parked.p, ctx->parked.len);
        memcpy(ctx->parked.p, ctx->in.p + head_end, extra);
        ctx->parked.len += extra;
        ctx->in.len = head_end;
    }
    ctx->body = UG_BODY_WAITING;
    ctx->body_paused = 0;
    ctx->body_fn = NULL;
    return 0;
}

void ug__body_refuse(ug__loop *lp, struct ug_request *ctx, int status, ug_cancel_reason why) {
    ctx->body = UG_BODY_FAILED;
    if (status != 408) UG_STAT_INC(lp, bad_requests);
    if (status == 413) UG_STAT_INC(lp, limit_body);
    if (ctx->rstate == UG_RS_HANDLER || ctx->rstate == UG_RS_DEFERRED) {
        ctx->keep_alive = 0;
        ug__request_refuse(lp, ctx, status, why, UG_END_REJECTED);
        return;
    }
    /* A response is being streamed: it cannot be answered any more. It ends cut short, and
     * the connection closes once what is queued is sent (ug__request_cancel). */
    ug__request_cancel(lp, ctx, why);
    ug__mark_dirty(lp, ctx->conn);
}

/* Go's rule, as for a buffered request: a client that half-closes before its response is
 * gone. But only once what it sent before its FIN has been handed out: while the handler
 * holds the body back (paused, or not reading yet) it may still take it, and answer. */
void ug__body_peer_eof(ug__loop *lp, ug__conn *c) {
    struct ug_request *ctx = c->ctx;
    if (ctx->body == UG_BODY_WAITING || (ctx->body == UG_BODY_READING && ctx->body_paused)) return;
    ug__request_cancel(lp, ctx, UG_CANCEL_CLIENT_GONE);
}

void ug__body_pump(ug__loop *lp, ug__conn *c) {
    struct ug_request *ctx = c->ctx;
    while (ctx->body == UG_BODY_READING && !ctx->body_paused && ug__request_live(ctx) &&
           !(c->flags & UG_CF_FAILED)) {
        int r = ug__http_parse(&ctx->http, ctx->parked.p, ctx->parked.len);
        if (r == UG_HTTP_ERROR) {
            ug__body_refuse(lp, ctx, ctx->http.error_status, UG_CANCEL_BODY);
            return;
        }
        int end = r == UG_HTTP_DONE;
        uint32_t n = ctx->http.body.len;
        if (!n && !end) return;
        if (end) ctx->body = UG_BODY_DONE;
        /* Never a NULL pointer, even for the 0-byte end of a body that had no buffer. */
        ctx->body_fn(ctx, ctx->parked.p ? ctx->parked.p : "", n, end, ctx->body_user);
        /* After the end, the trailers and the next request's bytes stay where they are. */
        if (end) return;
        ug__http_body_drop(&ctx->http, ctx->parked.p, &ctx->parked.len);
    }
}

/* ---------------------------------------------------------------- API ---- */

int ug_req_read_body(ug_request *req, ug_body_fn fn, void *user) {
    if (!req || !fn || !ug__request_live(req) || req->body == UG_BODY_BUFFERED) return -EINVAL;
    if (req->body != UG_BODY_WAITING) return -EALREADY;
    /* The client that asked is told to send the body only now that it will be read (never
     * after a response's head: a streamed response may have started). */
    if ((req->http.flags & UG_HTTP_EXPECT_CONTINUE) && !req->continue_sent &&
        req->rstate != UG_RS_STREAMING) {
        if (ug__resp_continue(req)) return -ENOMEM;
        req->continue_sent = 1;
    }
    req->body = UG_BODY_READING;
    req->body_fn = fn;
    req->body_user = user;
    ug__mark_dirty(req->loop, req->conn); /* the pieces already buffered */
    return 0;
}

int ug_req_body_pause(ug_request *req) {
    if (!req || req->body != UG_BODY_READING || !ug__request_live(req)) return -EINVAL;
    req->body_paused = 1;
    return 0;
}

int ug_req_body_resume(ug_request *req) {
    if (!req || req->body != UG_BODY_READING || !ug__request_live(req)) return -EINVAL;
    if (req->body_paused) {
        req->body_paused = 0;
        ug__mark_dirty(req->loop, req->conn);
    }
    return 0;
}

ug_str ug_req_trailer(const ug_request *req, const char *name) {
    const char *base;
    if (req->body == UG_BODY_BUFFERED)
        base = req->in.p + req->in_off;
    else if (req->body == UG_BODY_DONE)
        base = req->parked.p;
    else
        return (ug_str){NULL, 0};
    int i = ug__http_find_trailer(&req->http, base, name, (uint32_t)strlen(name));
    if (i < 0) return (ug_str){NULL, 0};
    const ug__span v = req->headers[i].value;
    return (ug_str){base + v.off, v.len};
}

uint64_t ug_req_body_bytes(const ug_request *req) {
    return req->http.body_seen_;
}
