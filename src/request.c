/* Requests: the context recycler, dispatch to the route (router.c) and the handler, the
 * core's own answers (404, 405, 503), cancels, the handler timeout, and the ug_req_* API. */
#include "core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Buffers grown past this by a large request are freed when the context is recycled. */
#define CTX_BUF_KEEP (16u * 1024)
#define CTX_FREE_MAX 1024u
/* A canned body and its length. */
#define LIT_BODY(s) (s), (sizeof(s) - 1)

/* ---------------------------------------------------------------- context recycler ---- */

static void inflight_done(ug__loop *lp, struct ug_request *ctx) {
    if (ctx->inflight) {
        ctx->inflight = 0;
        __atomic_store_n(&lp->inflight, lp->inflight - 1, __ATOMIC_RELAXED); /* a gauge */
    }
}

struct ug_request *ug__ctx_get(ug__loop *lp) {
    struct ug_request *ctx = lp->ctx_free;
    if (ctx) {
        lp->ctx_free = ctx->free_next;
        lp->ctx_free_count--;
        return ctx;
    }
    size_t hdr_bytes = (size_t)lp->limits->max_headers * sizeof(ug__http_header);
    ctx = ug__calloc(1, sizeof *ctx + hdr_bytes);
    if (!ctx) return NULL;
    ctx->loop = lp;
    ctx->headers = (ug__http_header *)(ctx + 1);
    ctx->sending = -1;
    ug__timer_init(&ctx->timer, NULL);
    return ctx;
}

static void buf_trim(ug__buf *b) {
    b->len = 0;
    if (b->cap > CTX_BUF_KEEP) ug__buf_free(b);
}

void ug__ctx_destroy(struct ug_request *ctx) {
    ug__buf_free(&ctx->in);
    ug__buf_free(&ctx->parked);
    ug__buf_free(&ctx->out[0]);
    ug__buf_free(&ctx->out[1]);
    ug__buf_free(&ctx->resp_hdrs);
    free(ctx);
}

void ug__ctx_put(ug__loop *lp, struct ug_request *ctx) {
    ug__timer_stop(&lp->timers, &ctx->timer);
    inflight_done(lp, ctx);
    buf_trim(&ctx->in);
    buf_trim(&ctx->parked);
    buf_trim(&ctx->out[0]);
    buf_trim(&ctx->out[1]);
    buf_trim(&ctx->resp_hdrs);
    ctx->own_hdrs = 0;
    ctx->in_off = 0;
    ctx->sending = -1;
    ctx->sent = 0;
    ctx->parsing = 0;
    ctx->rstate = UG_RS_NONE;
    ctx->id = 0;
    ctx->cancel_fn = NULL;
    ctx->timer_fn = NULL;
    ctx->conn = NULL;
    ctx->ndone = 0;
    ctx->body = UG_BODY_BUFFERED;
    ctx->body_fn = NULL;
    if (lp->ctx_free_count >= CTX_FREE_MAX) {
        ug__ctx_destroy(ctx);
        return;
    }
    ctx->free_next = lp->ctx_free;
    lp->ctx_free = ctx;
    lp->ctx_free_count++;
}

void ug__ctx_free_all(ug__loop *lp) {
    while (lp->ctx_free) {
        struct ug_request *ctx = lp->ctx_free;
        lp->ctx_free = ctx->free_next;
        ug__ctx_destroy(ctx);
    }
    lp->ctx_free_count = 0;
}

void ug__request_discard_stream(struct ug_request *ctx) {
    ctx->body = UG_BODY_BUFFERED;
    ctx->body_fn = NULL;
    ctx->parked.len = 0;
    ctx->in_off = ctx->in.len;
    ctx->parsing = 0;
    ctx->conn->flags |= UG_CF_CLOSE_AFTER;
}

void ug__request_cancel(ug__loop *lp, struct ug_request *ctx, ug_cancel_reason why) {
    if (!ug__request_live(ctx)) return;
    /* The hooks see the request as it was: its id and its views. */
    ug__request_done(lp, ctx, why == UG_CANCEL_CLIENT_GONE ? UG_END_CLIENT_GONE : UG_END_CANCELLED,
                     why);
    ug_cancel_fn fn = ctx->cancel_fn;
    void *user = ctx->cancel_user;
    ctx->cancel_fn = NULL;
    ctx->rstate = UG_RS_NONE;
    ctx->id = 0;
    inflight_done(lp, ctx);
    ug__timer_stop(&lp->timers, &ctx->timer);
    if (ug__gate_state(lp->srv) >= UG_GATE_DRAINING && why == UG_CANCEL_DEADLINE)
        UG_GAUGE_ADD(lp->report.requests_forced, 1);
    if (fn) { /* ug_stats counts the callbacks fired, as the handler timeout does */
        UG_STAT_INC(lp, requests_cancelled);
        fn(ctx, why, user);
    }
    /* The rest of a streamed body is never read; only now: the callback reads the head's
     * views, which this would move past. */
    if (ctx->body != UG_BODY_BUFFERED) ug__request_discard_stream(ctx);
}

/* ---------------------------------------------------------------- requests ---- */

/* A response the core itself gives (404, 405, 503, an error status). If even that cannot be
 * queued (out of memory), the connection is ended: no request may be left without answer or
 * timeout. */
static void core_respond(struct ug_request *ctx, int status, const char *body, size_t len) {
    if (ug_resp_send(ctx, status, "text/plain", body, len) == 0) return;
    ug__request_done(ctx->loop, ctx, UG_END_CANCELLED, UG_CANCEL_SERVER_ERROR);
    ctx->rstate = UG_RS_NONE;
    ctx->id = 0;
    ctx->conn->flags |= UG_CF_FAILED;
}

/* ug_config.request_ids: 1 to UG_REQUEST_ID_MAX characters from the client, of those ids
 * are made of (UUIDs, base64, dotted or dashed names): nothing that could mean something to
 * the HTML, JSON or shell a log ends up in (no quote, backslash, angle bracket, comma,
 * semicolon or space). Else one is generated. */
static int valid_request_id(ug_str v) {
    if (!v.ptr || !v.len || v.len > UG_REQUEST_ID_MAX) return 0;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.ptr[i];
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && !strchr("._~+/=:-", c)) return 0;
    }
    return 1;
}

/* A bijection of 64 bits (splitmix64's finalizer): generated ids stay unique, and do not
 * show the loop, the slot or how many requests came before. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ug__request_id_header(struct ug_request *ctx) {
    if (!ctx->request_id.ptr) return;
    char v[UG_REQUEST_ID_MAX + 1];
    memcpy(v, ctx->request_id.ptr, ctx->request_id.len);
    v[ctx->request_id.len] = '\0';
    (void)ug_resp_header(ctx, "X-Request-Id", v); /* out of memory: the response goes without */
}

/* 16 lowercase hex digits of v (no printf on the request path). */
static void hex16(char *dst, uint64_t v) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4) dst[i] = digits[v & 15];
}

static void assign_request_id(ug__loop *lp, struct ug_request *ctx) {
    ug_str h = ug_req_header(ctx, "X-Request-Id");
    if (valid_request_id(h)) {
        ctx->request_id = h;
    } else {
        hex16(ctx->rid_buf, lp->srv->rid_prefix);
        ctx->rid_buf[16] = '-';
        hex16(ctx->rid_buf + 17, mix64(ctx->id ^ lp->srv->rid_prefix));
        ctx->rid_buf[UG__RID_LEN] = '\0';
        ctx->request_id = (ug_str){ctx->rid_buf, UG__RID_LEN};
    }
    ug__request_id_header(ctx);
}

void ug__request_dispatch(ug__loop *lp, ug__conn *c, struct ug_request *ctx) {
    UG_STAT_INC(lp, requests);
    if (++lp->req_seq == 0) lp->req_seq = 1; /* wraps past 0: an id is never 0 */
    ctx->id = ((uint64_t)lp->req_seq << UG_ID_SEQ_SHIFT) |
              ((uint64_t)lp->index << UG_ID_LOOP_SHIFT) | ug__conn_idx(lp, c);
    ctx->t_dispatch_ms = lp->now_ms;
    ctx->end_how = UG_END_ANSWERED;
    c->requests++;
    ctx->head = (ctx->http.flags & UG_HTTP_HEAD) != 0;
    ctx->keep_alive = (ctx->http.flags & UG_HTTP_KEEP_ALIVE) != 0;
    ctx->rstate = UG_RS_HANDLER;
    ctx->cancel_fn = NULL;
    ctx->resp_hdrs.len = 0;
    ctx->own_hdrs = 0;
    ctx->ndone = 0;
    ctx->chain_at = 0;
    ctx->chain_running = UG__CHAIN_NONE;
    if (lp->srv->cfg.request_ids) assign_request_id(lp, ctx);
    /* Requests that run application code count against max_inflight: a route's, and with
     * global middlewares (which may defer) every one. The core's own 404 and 405 are not. */
    int app = ctx->route || lp->srv->nmw;
    if (app && lp->max_inflight != UG_UNLIMITED && lp->inflight >= lp->max_inflight) {
        /* Load shedding: answered at once, cheaply, and the client is told when to retry. */
        UG_STAT_INC(lp, shed);
        ctx->end_how = UG_END_SHED;
        (void)ug_resp_header(ctx, "Retry-After", "1"); /* a 503 without it is still right */
        core_respond(ctx, 503, LIT_BODY("Service Unavailable\n"));
        return;
    }
    if (app) {
        ctx->inflight = 1;
        __atomic_store_n(&lp->inflight, lp->inflight + 1, __ATOMIC_RELAXED); /* a gauge */
    }
    ug__chain_start(lp, ctx);
    /* Deferred behind the client's EOF: like any deferred request whose client closed, it
     * is cancelled (see ug_cancel_reason), a streamed body's too. */
    if (ctx->rstate == UG_RS_DEFERRED && (c->flags & UG_CF_PEER_EOF) &&
        ctx->body == UG_BODY_BUFFERED) { /* a streamed body's: ug__body_peer_eof */
        /* Consume the request here and let the connection close once the output before it
         * is sent; aborting from inside process() would pull the context out from under
         * the parse loop. */
        ug__request_cancel(lp, ctx, UG_CANCEL_CLIENT_GONE);
        ctx->in_off = ctx->in.len;
        ctx->parsing = 0;
        c->flags |= UG_CF_CLOSE_AFTER;
    }
}

/* A streamed body's request is answered: what is left of its bytes goes, and the next
 * request's bytes after it wait in 'parked' as any parked input does. Answered before its
 * body's end (the response said close), nothing more is read. */
static void finish_streamed(struct ug_request *ctx) {
    ctx->in_off += ctx->http.header_bytes;
    if (ug__body_open(ctx)) {
        ug__request_discard_stream(ctx);
        return;
    }
    uint32_t used = ctx->body == UG_BODY_DONE ? ctx->http.consumed : 0;
    /* Only when there is something to remove: a body that never had a byte parked (a
     * Content-Length of 0) leaves 'parked' unallocated, and memmove from NULL is undefined
     * even for 0 bytes (UBSan aborts the sanitized builds on it). */
    if (used) {
        memmove(ctx->parked.p, ctx->parked.p + used, ctx->parked.len - used);
        ctx->parked.len -= used;
    }
    ctx->body = UG_BODY_BUFFERED;
    ctx->body_fn = NULL;
}

/* The answered request's bytes are consumed; parked input joins the buffer. */
void ug__request_finish(ug__loop *lp, struct ug_request *ctx) {
    inflight_done(lp, ctx);
    if (ctx->body != UG_BODY_BUFFERED)
        finish_streamed(ctx);
    else
        ctx->in_off += ctx->http.consumed;
    ctx->parsing = 0;
    ctx->rstate = UG_RS_NONE;
    ctx->id = 0;
    ctx->cancel_fn = NULL;
    ctx->timer_fn = NULL;
    ug__timer_stop(&lp->timers, &ctx->timer);
    if (ug__gate_state(lp->srv) >= UG_GATE_DRAINING) UG_GAUGE_ADD(lp->report.requests_drained, 1);
    if (ctx->parked.len) {
        if (ctx->in_off) {
            memmove(ctx->in.p, ctx->in.p + ctx->in_off, ctx->in.len - ctx->in_off);
            ctx->in.len -= ctx->in_off;
            ctx->in_off = 0;
        }
        if (ug__buf_append(&ctx->in, ctx->parked.p, ctx->parked.len) == 0)
            ctx->parked.len = 0;
        else /* the parked bytes cannot follow: the stream can't go on in order */
            ctx->conn->flags |= UG_CF_FAILED;
    }
}

void ug__request_refuse(ug__loop *lp, struct ug_request *ctx, int status, ug_cancel_reason why,
                        ug_request_end how) {
    ug_cancel_fn fn = ctx->cancel_fn;
    void *user = ctx->cancel_user;
    ctx->cancel_fn = NULL;
    ctx->rstate = UG_RS_HANDLER;
    ctx->end_how = (uint8_t)how;
    /* What the handler added with ug_resp_header was meant for its own answer. */
    ctx->resp_hdrs.len = 0;
    ctx->own_hdrs = 0;
    ug__request_id_header(ctx);
    char body[64];
    const char *reason = ug__http_reason(status);
    size_t n = strlen(reason);
    assert(n + 1 <= sizeof body);
    memcpy(body, reason, n);
    body[n++] = '\n';
    core_respond(ctx, status, body, n);
    ug__mark_dirty(lp, ctx->conn); /* core_respond may have failed it: the flush closes it */
    if (fn) {
        UG_STAT_INC(lp, requests_cancelled);
        fn(ctx, why, user);
    }
}

/* handler_timeout_ms passed with the request deferred: answer for the handler, then tell
 * it; a late answer will find nothing. */
void ug__request_timed_out(ug__loop *lp, struct ug_request *ctx) {
    UG_STAT_INC(lp, timeouts_handler);
    ug__request_refuse(lp, ctx, 503, UG_CANCEL_TIMEOUT, UG_END_TIMED_OUT);
}

void ug__request_answered(struct ug_request *req) {
    ug__request_done(req->loop, req, (ug_request_end)req->end_how, 0);
    ug__mark_dirty(req->loop, req->conn);
}

#define MS_NS 1000000ull
const uint64_t ug__duration_bounds_ns[UG__DURATION_NBUCKETS] = {
    MS_NS / 10,   MS_NS / 4,    MS_NS / 2,    MS_NS,         5 * MS_NS / 2, 5 * MS_NS,
    10 * MS_NS,   25 * MS_NS,   50 * MS_NS,   100 * MS_NS,   250 * MS_NS,   500 * MS_NS,
    1000 * MS_NS, 2500 * MS_NS, 5000 * MS_NS, 10000 * MS_NS,
};

static void observe(ug__loop *lp, uint64_t ns) {
    unsigned b = 0;
    while (b < UG__DURATION_NBUCKETS && ns > ug__duration_bounds_ns[b]) b++;
    UG_GAUGE_ADD(lp->duration_counts[b], 1u);
    UG_GAUGE_ADD(lp->duration_sum_ns, ns);
}

void ug__request_done(ug__loop *lp, struct ug_request *ctx, ug_request_end how,
                      ug_cancel_reason why) {
    uint64_t now = ug__clock_ns();
    uint64_t ns = now > ctx->t_start_ns ? now - ctx->t_start_ns : 0;
    int answered = how == UG_END_ANSWERED || how == UG_END_REJECTED || how == UG_END_SHED ||
                   how == UG_END_TIMED_OUT;
    if (answered) observe(lp, ns);
    ug_server *srv = lp->srv;
    uint8_t ndone = ctx->ndone;
    ctx->ndone = 0; /* each runs once */
    /* The server's hooks are not called from ug_server_free (what they feed, an access log,
     * may be gone); the request's own callbacks are: they may hold what they must free. */
    size_t nhooks = srv->running == 1 ? srv->ndone_hooks : 0;
    if (!nhooks && !ndone) return;
    ug__conn *c = ctx->conn;
    uint64_t queued = c->bytes_out + ctx->out[0].len + ctx->out[1].len - ctx->sent;
    ug_completion info = {
        .request_id = ctx->id,
        .conn_id = ug__conn_id(lp, c),
        .loop = lp->index,
        .slot = ug__conn_idx(lp, c),
        .how = how,
        .cancel_reason = answered ? (ug_cancel_reason)0 : why,
        .status = ctx->status,
        .bytes_in = ctx->body == UG_BODY_BUFFERED
                        ? ctx->http.consumed
                        : ctx->http.header_bytes + ctx->http.body_dropped_ + ctx->http.consumed,
        .bytes_out = ctx->status ? queued - ctx->resp_base : 0,
        .duration_ns = ns,
    };
    /* While the hooks run, the request cannot be answered (nor found): they are told how it
     * ended, and a second answer would be a second report. */
    uint8_t rstate = ctx->rstate;
    ctx->rstate = UG_RS_ANSWERED;
    /* The request's own first, innermost first (a middleware's callback wraps what it
     * passed the request on to), then the server's. */
    for (uint8_t i = ndone; i-- > 0;) ctx->done[i].fn(ctx, &info, ctx->done[i].user);
    for (size_t i = 0; i < nhooks; i++) srv->done_hooks[i].fn(ctx, &info, srv->done_hooks[i].user);
    ctx->rstate = rstate;
}

/* ---------------------------------------------------------------- request API ---- */

static ug_str view(const struct ug_request *req, ug__span s) {
    ug_str v = {req->in.p + req->in_off + s.off, s.len};
    return v;
}

ug_str ug_req_method(const ug_request *req) {
    return view(req, req->http.method);
}
ug_str ug_req_target(const ug_request *req) {
    return view(req, req->http.target);
}
ug_str ug_req_path(const ug_request *req) {
    if (!req->http.path.len) return (ug_str){"/", 1}; /* an absolute-form target without one */
    return view(req, req->http.path);
}
ug_str ug_req_query(const ug_request *req) {
    if (!req->http.has_query) return (ug_str){NULL, 0};
    return view(req, req->http.query);
}
ug_str ug_req_authority(const ug_request *req) {
    if (!req->http.has_authority) return (ug_str){NULL, 0};
    return view(req, req->http.authority);
}
int ug_req_http_minor(const ug_request *req) {
    return req->http.http_minor;
}
ug_str ug_req_body(const ug_request *req) {
    if (!req->http.body.len || req->body != UG_BODY_BUFFERED) return (ug_str){"", 0};
    return view(req, req->http.body);
}
ug_server *ug_req_server(const ug_request *req) {
    return req->loop->srv;
}
unsigned ug_req_loop(const ug_request *req) {
    return req->loop->index;
}
uint64_t ug_req_id(const ug_request *req) {
    return req->id;
}
ug_str ug_req_request_id(const ug_request *req) {
    return req->request_id;
}

ug_str ug_req_header(const ug_request *req, const char *name) {
    int i = ug__http_find_header(&req->http, req->in.p + req->in_off, name, (uint32_t)strlen(name));
    if (i < 0) return (ug_str){NULL, 0};
    return view(req, req->headers[i].value);
}

size_t ug_req_header_count(const ug_request *req) {
    return req->http.nheaders;
}

int ug_req_header_at(const ug_request *req, size_t i, ug_str *name, ug_str *value) {
    if (i >= req->http.nheaders) return -ERANGE;
    if (name) *name = view(req, req->headers[i].name);
    if (value) *value = view(req, req->headers[i].value);
    return 0;
}

ug_str ug_req_query_param(const ug_request *req, const char *key) {
    ug_str q = ug_req_query(req);
    size_t kl = strlen(key);
    const char *p = q.ptr, *end = q.ptr + q.len;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - p) == kl && !memcmp(p, key, kl)) {
            if (!eq) return (ug_str){stop, 0};
            return (ug_str){eq + 1, (size_t)(stop - eq - 1)};
        }
        p = amp ? amp + 1 : NULL;
    }
    return (ug_str){NULL, 0};
}

ug_request *ug_req_find(ug_server *srv, uint64_t id) {
    if (!srv || !id) return NULL;
    uint32_t li = UG_ID_LOOP(id), idx = UG_ID_SLOT(id);
    if (li >= srv->nloops) return NULL;
    ug__loop *lp = srv->loops[li];
    ug__conn *c = idx < lp->slots_used ? &lp->slots[idx] : NULL;
    if (!c || c->state != UG_CONN_OPEN || !c->ctx || c->ctx->id != id ||
        !ug__request_live(c->ctx)) {
        UG_STAT_INC(lp, late_responses); /* its answer, if any, is dropped by the caller */
        return NULL;
    }
    return c->ctx;
}

int ug_req_post(ug_server *srv, uint64_t id, ug_post_fn fn, void *user) {
    if (!srv || !fn || !(id >> UG_ID_SEQ_SHIFT) || UG_ID_LOOP(id) >= srv->nloops) return -EINVAL;
    return ug__loop_post(srv->loops[UG_ID_LOOP(id)], fn, user);
}

void ug_req_on_cancel(ug_request *req, ug_cancel_fn fn, void *user) {
    req->cancel_fn = fn;
    req->cancel_user = user;
}

static void req_timer_fired(ug__timer *t, void *arg) {
    (void)arg;
    struct ug_request *req = (struct ug_request *)((char *)t - offsetof(struct ug_request, timer));
    ug_req_timer_fn fn = req->timer_fn;
    req->timer_fn = NULL;
    if (fn && ug__request_live(req)) fn(req, req->timer_user);
}

int ug_req_timer(ug_request *req, uint32_t ms, ug_req_timer_fn fn, void *user) {
    if (!ug__request_live(req) || !fn) return -EINVAL;
    req->timer.fn = req_timer_fired;
    req->timer_fn = fn;
    req->timer_user = user;
    return ug__timer_start(&req->loop->timers, &req->timer, req->loop->now_ms + ms);
}
