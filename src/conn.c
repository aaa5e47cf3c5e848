/* Connection state machine: read → parse → dispatch → write → keep-alive or close.
 *
 * An idle keep-alive connection owns only its slot (struct ug__conn, 40 bytes) and an armed
 * multishot recv: no buffer. A request context (struct ug_request: input, parser, output) is
 * taken from a recycler when bytes arrive and given back when the connection is idle again.
 *
 * Lifetime rule: a slot is freed, and its fd closed, only after the final completion of
 * every operation started on it (recv, send) has been seen, cancels included: until then the
 * kernel may still write into our buffers or post completions carrying this slot's user_data.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Input received while a request is being handled is parked; past this much, reading is
 * paused (the recv is cancelled) so a pipelining client cannot grow our memory without bound:
 * the rest waits in the kernel's socket buffer. Output is bounded the same way, by
 * max_output_bytes (see output_over). */
#define PARKED_INPUT_MAX (64u * 1024)
/* Buffers grown past this by a large request are freed when the context is recycled. */
#define CTX_BUF_KEEP (16u * 1024)
#define CTX_FREE_MAX 1024u
/* A canned body and its length. */
#define LIT_BODY(s) (s), (sizeof(s) - 1)

static uint32_t conn_idx(const ug_server *srv, const ug__conn *c) {
    return (uint32_t)(c - srv->slots);
}

static uint64_t conn_ud(const ug_server *srv, const ug__conn *c, enum ug__op op) {
    return UG_UD(op, conn_idx(srv, c), c->gen);
}

/* ---------------------------------------------------------------- context recycler ---- */

static void inflight_done(ug_server *srv, struct ug_request *ctx) {
    if (ctx->inflight) {
        ctx->inflight = 0;
        srv->inflight--;
    }
}

struct ug_request *ug__ctx_get(ug_server *srv) {
    struct ug_request *ctx = srv->ctx_free;
    if (ctx) {
        srv->ctx_free = ctx->free_next;
        srv->ctx_free_count--;
        return ctx;
    }
    size_t hdr_bytes = (size_t)srv->limits.max_headers * sizeof(ug__http_header);
    ctx = ug__calloc(1, sizeof *ctx + hdr_bytes);
    if (!ctx) return NULL;
    ctx->srv = srv;
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

void ug__ctx_put(ug_server *srv, struct ug_request *ctx) {
    ug__timer_stop(&srv->timers, &ctx->timer);
    inflight_done(srv, ctx);
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
    if (srv->ctx_free_count >= CTX_FREE_MAX) {
        ug__ctx_destroy(ctx);
        return;
    }
    ctx->free_next = srv->ctx_free;
    srv->ctx_free = ctx;
    srv->ctx_free_count++;
}

/* ---------------------------------------------------------------- slots ---- */

static ug__conn *slot_alloc(ug_server *srv) {
    ug__conn *c;
    if (srv->free_head != UG_NONE) {
        c = &srv->slots[srv->free_head];
        srv->free_head = c->tq_next;
    } else if (srv->slots_used < srv->nslots) {
        c = &srv->slots[srv->slots_used++];
        c->gen = 0;
        c->flags = 0;
    } else {
        return NULL;
    }
    c->gen++;
    c->state = UG_CONN_OPEN;
    c->tq = UG_TQ_NONE;
    /* A slot freed while on the dirty list is still linked there: keep it linked (the new
     * occupant gets one harmless extra flush). Resetting dirty_next would cut the list and
     * strand every connection after it with DIRTY set and nothing to flush them. */
    if (!(c->flags & UG_CF_DIRTY)) c->dirty_next = UG_NONE;
    c->flags &= UG_CF_DIRTY;
    c->tq_prev = c->tq_next = UG_NONE;
    c->ctx = NULL;
    return c;
}

void ug__conn_free_slot(ug_server *srv, ug__conn *c) {
    c->state = UG_CONN_FREE;
    c->fd = -1;
    c->tq_next = srv->free_head;
    srv->free_head = conn_idx(srv, c);
}

/* ---------------------------------------------------------------- I/O ---- */

static int arm_recv(ug_server *srv, ug__conn *c) {
    /* A paused connection is re-armed only where its pause is lifted: arming it anywhere else
     * would read on past the bound, and the pause could never end (a recv armed again). */
    assert(!(c->state == UG_CONN_OPEN && (c->flags & UG_CF_RECV_PAUSED)));
    int rc = srv->be_ops->recv(srv->be, c->fd, conn_ud(srv, c, UG_OP_RECV));
    if (rc == 0) c->flags |= UG_CF_RECV_ARMED;
    return rc;
}

static int start_send(ug_server *srv, ug__conn *c, int which) {
    struct ug_request *ctx = c->ctx;
    ctx->sending = (int8_t)which;
    ctx->iov.iov_base = ctx->out[which].p + ctx->sent;
    ctx->iov.iov_len = ctx->out[which].len - ctx->sent;
    int rc = srv->be_ops->send(srv->be, c->fd, &ctx->iov, 1, conn_ud(srv, c, UG_OP_SEND));
    if (rc) return rc;
    c->flags |= UG_CF_SEND_INFLIGHT;
    ug__tq_set(srv, c, UG_TQ_WRITE);
    return 0;
}

static int request_live(const struct ug_request *ctx) {
    return ctx && (ctx->rstate == UG_RS_HANDLER || ctx->rstate == UG_RS_DEFERRED ||
                   ctx->rstate == UG_RS_STREAMING);
}

/* Response bytes queued and not yet sent. */
static uint32_t out_pending(const struct ug_request *ctx) {
    return ctx->out[0].len + ctx->out[1].len - ctx->sent;
}

/* Output backpressure: a client that sends requests and does not read the responses gets no
 * more of its requests parsed (nor its bytes read) once this much is waiting for it... */
static int output_over(const ug_server *srv, const struct ug_request *ctx) {
    return out_pending(ctx) > srv->cfg.max_output_bytes;
}

/* ... and reading resumes once it is down to a quarter: hysteresis, so that a client that
 * reads slowly does not make us pause and resume on every send. */
static int output_drained(const ug_server *srv, const struct ug_request *ctx) {
    return out_pending(ctx) <= srv->cfg.max_output_bytes / 4;
}

/* Stop reading (counted in *why): cancel the multishot recv; its final completion clears
 * RECV_ARMED and the flush re-arms it once the reason is gone. */
static void pause_recv(ug_server *srv, ug__conn *c, uint64_t *why) {
    if (!(c->flags & UG_CF_RECV_ARMED) || (c->flags & UG_CF_RECV_PAUSED)) return;
    (*why)++;
    c->flags |= UG_CF_RECV_PAUSED;
    if (srv->be_ops->cancel(srv->be, conn_ud(srv, c, UG_OP_RECV)))
        c->flags |= UG_CF_FAILED; /* no room to cancel: end it rather than read on unbounded */
}

static void try_finalize(ug_server *srv, ug__conn *c) {
    if (c->flags & (UG_CF_RECV_ARMED | UG_CF_SEND_INFLIGHT)) return;
    close(c->fd);
    if (c->ctx) {
        ug__ctx_put(srv, c->ctx);
        c->ctx = NULL;
    }
    ug__tq_set(srv, c, UG_TQ_NONE);
    srv->conns_open--;
    srv->stats.conns_closed++;
    if (c->flags & UG_CF_ERROR) srv->stats.conns_reset++;
    ug__gate_check_limit(srv);
    int gate = atomic_load_explicit(&srv->gate, memory_order_relaxed);
    if (gate == UG_GATE_DRAINING) {
        if (srv->forced)
            srv->report.conns_forced++;
        else
            srv->report.conns_drained++;
    }
    ug__conn_free_slot(srv, c);
}

static void cancel_request(ug_server *srv, struct ug_request *ctx, ug_cancel_reason why) {
    if (!request_live(ctx)) return;
    ug_cancel_fn fn = ctx->cancel_fn;
    void *user = ctx->cancel_user;
    ctx->cancel_fn = NULL;
    ctx->rstate = UG_RS_NONE;
    ctx->id = 0;
    inflight_done(srv, ctx);
    ug__timer_stop(&srv->timers, &ctx->timer);
    if (atomic_load_explicit(&srv->gate, memory_order_relaxed) >= UG_GATE_DRAINING &&
        why == UG_CANCEL_DEADLINE)
        srv->report.requests_forced++;
    if (fn) { /* ug_stats counts the callbacks fired, as the handler timeout does */
        srv->stats.requests_cancelled++;
        fn(ctx, why, user);
    }
}

void ug__conn_close(ug_server *srv, ug__conn *c, int error) {
    if (c->state == UG_CONN_CLOSING || c->state == UG_CONN_FREE) return;
    if (c->ctx && request_live(c->ctx)) cancel_request(srv, c->ctx, UG_CANCEL_CLIENT_GONE);
    if (error) c->flags |= UG_CF_ERROR;
    c->state = UG_CONN_CLOSING;
    ug__tq_set(srv, c, UG_TQ_NONE);
    int failed = 0;
    if (c->flags & UG_CF_RECV_ARMED)
        failed |= srv->be_ops->cancel(srv->be, conn_ud(srv, c, UG_OP_RECV)) != 0;
    if (c->flags & UG_CF_SEND_INFLIGHT)
        failed |= srv->be_ops->cancel(srv->be, conn_ud(srv, c, UG_OP_SEND)) != 0;
    /* No room to cancel (SQ full): shutting the socket down completes its armed recv (EOF)
     * and send (EPIPE) just the same, so the final completions still come. */
    if (failed) shutdown(c->fd, SHUT_RDWR);
    try_finalize(srv, c);
}

void ug__conn_abort(ug_server *srv, ug__conn *c, ug_cancel_reason why) {
    if (c->state == UG_CONN_CLOSING || c->state == UG_CONN_FREE) return;
    if (c->ctx) cancel_request(srv, c->ctx, why);
    ug__conn_close(srv, c, why != UG_CANCEL_DEADLINE);
}

/* End a connection the server could not keep going (out of memory, no submission slot). */
static void conn_failed(ug_server *srv, ug__conn *c) {
    if (c->state == UG_CONN_CLOSING || c->state == UG_CONN_FREE) return;
    srv->stats.conns_failed++;
    ug__log(srv, UG_LOG_WARN, "connection ended: out of memory or submission slots");
    if (c->ctx) cancel_request(srv, c->ctx, UG_CANCEL_SERVER_ERROR);
    ug__conn_close(srv, c, 1);
}

/* Close politely: our FIN goes out after the last response, then we keep reading (and
 * discarding) until the client closes or the linger ends. Closing with unread input in the
 * socket would make the kernel send a reset, which can destroy the response the client has
 * not read yet. */
static void begin_linger(ug_server *srv, ug__conn *c) {
    if (c->ctx) {
        ug__ctx_put(srv, c->ctx);
        c->ctx = NULL;
    }
    /* Paused reading resumes: lingering must read what the client sends, or the close would
     * reset the connection. A pause's cancel still in flight re-arms when its final
     * completion arrives (ug__conn_on_recv, LINGER). */
    if (c->flags & UG_CF_RECV_PAUSED) {
        c->flags &= (uint16_t)~UG_CF_RECV_PAUSED;
        if (!(c->flags & UG_CF_RECV_ARMED) && arm_recv(srv, c)) {
            conn_failed(srv, c);
            return;
        }
    }
    if (!(c->flags & UG_CF_RECV_ARMED)) { /* the peer already closed its side */
        ug__conn_close(srv, c, 0);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = UG_CONN_LINGER;
    ug__tq_set(srv, c, UG_TQ_NONE);
    ug__tq_set(srv, c, UG_TQ_LINGER);
}

/* Decide what the connection waits for now, and give the context back if it is idle. */
static void settle(ug_server *srv, ug__conn *c) {
    struct ug_request *ctx = c->ctx;
    if (c->flags & UG_CF_SEND_INFLIGHT) return; /* in the write queue */
    if (ctx && request_live(ctx)) {
        /* Waiting for the handler; a stream in progress is bounded by the write timeout. */
        ug__tq_set(srv, c, ctx->rstate == UG_RS_DEFERRED ? UG_TQ_HANDLER : UG_TQ_NONE);
        return;
    }
    if (ctx && ctx->in.len > ctx->in_off) {
        ug__tq_set(srv, c, ctx->parsing && ctx->http.header_bytes ? UG_TQ_BODY : UG_TQ_HEADER);
        return;
    }
    if (ctx) {
        ug__ctx_put(srv, ctx);
        c->ctx = NULL;
    }
    if (c->flags & UG_CF_CLOSE_AFTER) {
        begin_linger(srv, c);
        return;
    }
    /* During a drain an idle keep-alive connection is not slammed shut: a request racing
     * in during the linger is still served (with Connection: close). */
    ug__tq_set(srv, c, (c->flags & UG_CF_DRAIN) ? UG_TQ_LINGER : UG_TQ_IDLE);
}

/* ---------------------------------------------------------------- requests ---- */

static const ug__route *find_route(ug_server *srv, ug_str method, ug_str path, int *path_hit) {
    *path_hit = 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        const ug__route *r = &srv->routes[i];
        if (r->flags & UG_ROUTE_PREFIX) {
            if (path.len < r->path_len || memcmp(path.ptr, r->path, r->path_len)) continue;
        } else if (path.len != r->path_len || memcmp(path.ptr, r->path, r->path_len)) {
            continue;
        }
        *path_hit = 1;
        if (!r->method) return r;
        size_t ml = strlen(r->method);
        if (method.len == ml && !memcmp(method.ptr, r->method, ml)) return r;
        if (method.len == sizeof("HEAD") - 1 && !memcmp(method.ptr, "HEAD", method.len) &&
            !strcmp(r->method, "GET"))
            return r;
    }
    return NULL;
}

/* A response the core itself gives (404, 405, 503, an error status). If even that cannot be
 * queued (out of memory), the connection is ended: no request may be left without answer or
 * timeout. */
static void core_respond(struct ug_request *ctx, int status, const char *body, size_t len) {
    if (ug_resp_send(ctx, status, "text/plain", body, len) == 0) return;
    ctx->rstate = UG_RS_NONE;
    ctx->id = 0;
    ctx->conn->flags |= UG_CF_FAILED;
}

static void dispatch(ug_server *srv, ug__conn *c, struct ug_request *ctx) {
    srv->stats.requests++;
    ctx->id = (++srv->req_seq << 28) | conn_idx(srv, c);
    ctx->head = (ctx->http.flags & UG_HTTP_HEAD) != 0;
    ctx->keep_alive = (ctx->http.flags & UG_HTTP_KEEP_ALIVE) != 0;
    ctx->rstate = UG_RS_HANDLER;
    ctx->cancel_fn = NULL;
    ctx->resp_hdrs.len = 0;
    ctx->own_hdrs = 0;
    int path_hit;
    const ug__route *r = find_route(srv, ug_req_method(ctx), ug_req_path(ctx), &path_hit);
    if (!r) {
        if (path_hit)
            core_respond(ctx, 405, LIT_BODY("Method Not Allowed\n"));
        else
            core_respond(ctx, 404, LIT_BODY("Not Found\n"));
        return;
    }
    if (srv->cfg.max_inflight != UG_UNLIMITED && srv->inflight >= srv->cfg.max_inflight) {
        /* Load shedding: answered at once, cheaply, and the client is told when to retry. */
        srv->stats.shed++;
        (void)ug_resp_header(ctx, "Retry-After", "1"); /* a 503 without it is still right */
        core_respond(ctx, 503, LIT_BODY("Service Unavailable\n"));
        return;
    }
    ctx->inflight = 1;
    srv->inflight++;
    ug_handler_result res = r->fn(ctx, r->user);
    if (ctx->rstate == UG_RS_HANDLER) {
        if (res == UG_LATER) {
            ctx->rstate = UG_RS_DEFERRED;
            /* Buffered behind the client's EOF: like any deferred request whose client
             * closed, it is cancelled (see ug_cancel_reason). */
            if (c->flags & UG_CF_PEER_EOF) {
                /* Consume the request here and let the connection close once the output
                 * before it is sent; aborting from inside process() would pull the
                 * context out from under the parse loop. */
                cancel_request(srv, ctx, UG_CANCEL_CLIENT_GONE);
                ctx->in_off = ctx->in.len;
                ctx->parsing = 0;
                c->flags |= UG_CF_CLOSE_AFTER;
            }
            return;
        }
        /* A handler that neither answered nor deferred: the client must not hang. */
        srv->stats.handler_no_response++;
        ug__log(srv, UG_LOG_WARN, "handler returned UG_DONE without responding: 500");
        if (ug__resp_error(ctx, 500)) c->flags |= UG_CF_FAILED;
        ctx->rstate = UG_RS_ANSWERED;
    } else if (ctx->rstate == UG_RS_STREAMING && res == UG_DONE) {
        /* Returned mid-stream without deferring: the body can't be completed. Send what is
         * queued and close, so the client sees a truncated chunked body, not a hang. */
        srv->stats.handler_no_response++;
        ug__log(srv, UG_LOG_WARN, "handler returned UG_DONE mid-stream: closing");
        c->flags |= UG_CF_CLOSE_AFTER;
        ctx->rstate = UG_RS_ANSWERED;
    }
}

/* The answered request's bytes are consumed; parked input joins the buffer. */
static void finish_request(ug_server *srv, struct ug_request *ctx) {
    inflight_done(srv, ctx);
    ctx->in_off += ctx->http.consumed;
    ctx->parsing = 0;
    ctx->rstate = UG_RS_NONE;
    ctx->id = 0;
    ctx->cancel_fn = NULL;
    ctx->timer_fn = NULL;
    ug__timer_stop(&srv->timers, &ctx->timer);
    if (atomic_load_explicit(&srv->gate, memory_order_relaxed) >= UG_GATE_DRAINING)
        srv->report.requests_drained++;
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

static void count_limit(ug_server *srv, const ug__http_req *h) {
    switch (h->error_status) {
    case 431:
        if (h->error_reason && !strcmp(h->error_reason, UG_HTTP_REASON_TOO_MANY_HEADERS))
            srv->stats.limit_headers++;
        else
            srv->stats.limit_header_bytes++;
        break;
    case 414:
        srv->stats.limit_uri++;
        break;
    case 413:
        srv->stats.limit_body++;
        break;
    default:
        break;
    }
}

/* Parse and dispatch every complete request in the buffer, in order, until one is deferred
 * or the input runs out. Responses accumulate in the output buffer. */
static void process(ug_server *srv, ug__conn *c) {
    struct ug_request *ctx = c->ctx;
    for (;;) {
        if (ctx->rstate == UG_RS_ANSWERED) finish_request(srv, ctx);
        if (ctx->rstate != UG_RS_NONE || (c->flags & UG_CF_FAILED)) break;
        if (c->flags & UG_CF_CLOSE_AFTER) { /* nothing after a closing response is read */
            ctx->in_off = ctx->in.len;
            break;
        }
        /* Backpressure: requests are parsed ahead only while the client reads. */
        if (output_over(srv, ctx)) break;
        uint32_t avail = ctx->in.len - ctx->in_off;
        if (!avail) break;
        if (!ctx->parsing) {
            ug__http_req_init(&ctx->http, &srv->limits, ctx->headers);
            ctx->parsing = 1;
            ctx->continue_sent = 0;
        }
        char *base = ctx->in.p + ctx->in_off;
        int r = ug__http_parse(&ctx->http, base, avail);
        if (r == UG_HTTP_NEED_MORE) break;
        if (r == UG_HTTP_HEADERS_DONE) {
            /* Ask for the body only if the client is waiting for our go-ahead. */
            if ((ctx->http.flags & UG_HTTP_EXPECT_CONTINUE) && !ctx->continue_sent &&
                ctx->http.consumed == avail && !(c->flags & UG_CF_DRAIN)) {
                ctx->continue_sent = 1;
                if (ug__resp_continue(ctx)) c->flags |= UG_CF_FAILED;
            }
            continue;
        }
        if (r == UG_HTTP_ERROR) {
            srv->stats.requests++;
            srv->stats.bad_requests++;
            count_limit(srv, &ctx->http);
            /* The parser's flags come with the whole head: a HEAD refused before it ends
             * (414, 431, a bad field) is still answered without a body (RFC 9110 9.3.2). */
            ctx->head = (ctx->http.flags & UG_HTTP_HEAD) != 0 || ug__http_starts_head(base, avail);
            ctx->keep_alive = 0;
            if (ug__resp_error(ctx, ctx->http.error_status)) c->flags |= UG_CF_FAILED;
            ctx->parsing = 0;
            ctx->in_off = ctx->in.len;
            break;
        }
        dispatch(srv, c, ctx);
    }
    /* After the client's EOF, what is left unparsed is an incomplete request that can never
     * complete now; unless parsing stopped for backpressure, with complete ones still to go. */
    if ((c->flags & UG_CF_PEER_EOF) && !request_live(ctx) && !output_over(srv, ctx)) {
        ctx->in_off = ctx->in.len;
        c->flags |= UG_CF_CLOSE_AFTER;
    }
    if (!request_live(ctx) && ctx->in_off) {
        memmove(ctx->in.p, ctx->in.p + ctx->in_off, ctx->in.len - ctx->in_off);
        ctx->in.len -= ctx->in_off;
        ctx->in_off = 0;
    }
}

void ug__conn_flush(ug_server *srv, ug__conn *c) {
    if (c->state != UG_CONN_OPEN) return;
    struct ug_request *ctx = c->ctx;
    if (ctx) {
        process(srv, c);
        if (c->state != UG_CONN_OPEN) return;
        if (c->flags & UG_CF_FAILED) {
            conn_failed(srv, c);
            return;
        }
        if (!(c->flags & UG_CF_SEND_INFLIGHT) && ctx->out[0].len && start_send(srv, c, 0) != 0) {
            conn_failed(srv, c);
            return;
        }
        if (output_over(srv, ctx)) {
            pause_recv(srv, c, &srv->stats.output_pauses);
            if (c->flags & UG_CF_FAILED) {
                conn_failed(srv, c);
                return;
            }
        }
    }
    /* Reading was paused by cancelling the recv: resume once its final completion has been
     * seen, the parked input is consumed and the output has drained (the context may be
     * gone by then). */
    if ((c->flags & UG_CF_RECV_PAUSED) && !(c->flags & UG_CF_RECV_ARMED) &&
        (!ctx || (!request_live(ctx) && ctx->parked.len == 0 && output_drained(srv, ctx)))) {
        c->flags &= (uint16_t)~UG_CF_RECV_PAUSED;
        if (arm_recv(srv, c)) {
            conn_failed(srv, c);
            return;
        }
    }
    if (ctx || c->tq == UG_TQ_NONE) settle(srv, c);
}

/* ---------------------------------------------------------------- completions ---- */

void ug__conn_accepted(ug_server *srv, int fd) {
    ug__conn *c = slot_alloc(srv);
    if (!c) { /* the gate pauses before this can happen; belt and braces */
        ug__log(srv, UG_LOG_ERROR, "no connection slot free: closing accepted fd");
        close(fd);
        return;
    }
    c->fd = fd;
    srv->conns_open++;
    srv->stats.conns_accepted++;
    if (srv->forced) { /* taken from the queue after the deadline (or an immediate stop): */
        c->state = UG_CONN_CLOSING; /* nothing is armed yet, so it is finalized (and */
        try_finalize(srv, c);       /* counted as forced) at once */
        return;
    }
    ug__sock_set_nodelay(fd);
    if (atomic_load_explicit(&srv->gate, memory_order_relaxed) >= UG_GATE_DRAINING)
        c->flags |= UG_CF_DRAIN;
    if (arm_recv(srv, c)) {
        conn_failed(srv, c);
        return;
    }
    ug__tq_set(srv, c, (c->flags & UG_CF_DRAIN) ? UG_TQ_LINGER : UG_TQ_HEADER);
    ug__gate_check_limit(srv);
}

void ug__conn_on_recv(ug_server *srv, ug__conn *c, const ug__completion *cq) {
    int more = (cq->flags & UG__CF_MORE) != 0;
    if (!more) c->flags &= (uint16_t)~UG_CF_RECV_ARMED;
    if (cq->res > 0) {
        int keep = 0;
        if (c->state == UG_CONN_OPEN) {
            if (!c->ctx && !(c->ctx = ug__ctx_get(srv))) {
                srv->be_ops->recv_release(srv->be, cq->buf_id);
                conn_failed(srv, c);
                return;
            }
            struct ug_request *ctx = c->ctx;
            ctx->conn = c;
            /* While a request is being handled its views point into ctx->in: park the bytes
             * instead of growing (and maybe moving) that buffer. */
            /* Bytes queue behind older parked bytes too: appending them to in ahead of those
             * would reorder the client's stream. */
            ug__buf *dst = request_live(ctx) || ctx->parked.len ? &ctx->parked : &ctx->in;
            keep = ug__buf_append(dst, cq->data, (size_t)cq->res) == 0;
            if (keep && dst == &ctx->parked && ctx->parked.len > PARKED_INPUT_MAX)
                pause_recv(srv, c, &srv->stats.input_pauses);
        }
        if (cq->flags & UG__CF_BUFFER) srv->be_ops->recv_release(srv->be, cq->buf_id);
        if (c->state == UG_CONN_OPEN) {
            if (!keep) {
                conn_failed(srv, c);
                return;
            }
            if (c->tq == UG_TQ_BODY) ug__tq_touch(srv, c); /* the body timeout is a gap */
            /* Bytes of a new request: the idle wait (or the drain linger) is over, even if
             * the deadline passes before this batch is flushed. */
            if (c->tq == UG_TQ_IDLE || c->tq == UG_TQ_LINGER) ug__tq_set(srv, c, UG_TQ_HEADER);
            if (!more && !(c->flags & UG_CF_RECV_PAUSED)) {
                if (arm_recv(srv, c) == 0)
                    srv->stats.recv_rearms++;
                else /* can't read on: answer what is buffered, then close (like EOF) */
                    c->flags |= UG_CF_PEER_EOF;
            }
            ug__mark_dirty(srv, c);
        } else if (c->state == UG_CONN_LINGER && !more && arm_recv(srv, c)) {
            conn_failed(srv, c);
        } else if (c->state == UG_CONN_CLOSING) {
            try_finalize(srv, c);
        }
        return;
    }
    if (cq->flags & UG__CF_BUFFER) srv->be_ops->recv_release(srv->be, cq->buf_id);
    if (cq->res == -ENOBUFS && c->state != UG_CONN_CLOSING) {
        if (c->state == UG_CONN_OPEN && (c->flags & UG_CF_RECV_PAUSED)) {
            /* Paused, and the recv ended by itself before the pause's cancel reached it (the
             * cancel then finds nothing): this is the pause's final completion. Re-arming
             * here would read on past the bound, for good. */
            ug__mark_dirty(srv, c);
            return;
        }
        /* The pool ran dry for a moment (buffers go back at the end of this batch). */
        srv->stats.recv_rearms++;
        if (arm_recv(srv, c) == 0) return;
        /* Can't read on: like the same failure after data, answer what is buffered (and
         * what is being sent), then close, as after an EOF. */
        if (c->state == UG_CONN_LINGER) {
            conn_failed(srv, c);
            return;
        }
        c->flags |= UG_CF_PEER_EOF;
        ug__mark_dirty(srv, c);
        return;
    }
    if (cq->res == -ECANCELED && c->state == UG_CONN_OPEN) { /* paused by us */
        if (!(c->flags & UG_CF_RECV_PAUSED))
            ug__conn_close(srv, c, 1);
        else
            ug__mark_dirty(srv, c); /* the flush re-arms once the request is answered */
        return;
    }
    if (c->state == UG_CONN_CLOSING) {
        try_finalize(srv, c);
        return;
    }
    if (c->state == UG_CONN_LINGER) {
        /* A pause's cancel (begin_linger): keep reading. EOF or an error: the client is done. */
        if (cq->res == -ECANCELED) {
            if (arm_recv(srv, c)) conn_failed(srv, c);
            return;
        }
        ug__conn_close(srv, c, 0);
        return;
    }
    if (cq->res == 0) {
        /* EOF. A deferred handler's client is gone (Go's rule: a half-closed client is
         * treated as gone). Complete requests already buffered are still answered. */
        struct ug_request *ctx = c->ctx;
        if (ctx && request_live(ctx)) {
            ug__conn_abort(srv, c, UG_CANCEL_CLIENT_GONE);
            return;
        }
        c->flags |= UG_CF_PEER_EOF;
        if (ctx && ctx->in.len > ctx->in_off) {
            ug__mark_dirty(srv, c); /* answer what is complete; the rest is dropped */
            return;
        }
        c->flags |= UG_CF_CLOSE_AFTER;
        if (c->flags & UG_CF_SEND_INFLIGHT) return; /* closes when the send completes */
        ug__conn_close(srv, c, 0);
        return;
    }
    ug__conn_abort(srv, c, UG_CANCEL_CLIENT_GONE); /* reset, or another error */
}

void ug__conn_on_send(ug_server *srv, ug__conn *c, const ug__completion *cq) {
    c->flags &= (uint16_t)~UG_CF_SEND_INFLIGHT;
    struct ug_request *ctx = c->ctx;
    if (c->state != UG_CONN_OPEN || !ctx) {
        if (c->state == UG_CONN_CLOSING) try_finalize(srv, c);
        return;
    }
    if (cq->res <= 0) {
        ug__conn_abort(srv, c, UG_CANCEL_CLIENT_GONE);
        return;
    }
    ug__buf *ob = &ctx->out[ctx->sending];
    ctx->sent += (uint32_t)cq->res;
    if (ctx->sent < ob->len) { /* short write: send the rest */
        ug__tq_set(srv, c, UG_TQ_NONE);
        if (start_send(srv, c, ctx->sending)) conn_failed(srv, c);
        return;
    }
    ob->len = 0;
    ctx->sent = 0;
    int next = !ctx->sending;
    ctx->sending = -1;
    if (ctx->out[next].len) { /* appended while the first was in flight: keep order */
        ug__tq_set(srv, c, UG_TQ_NONE);
        if (start_send(srv, c, next)) conn_failed(srv, c);
        return;
    }
    ug__tq_set(srv, c, UG_TQ_NONE);
    ug__mark_dirty(srv, c); /* parse what arrived meanwhile; settle timeouts */
}

void ug__conn_timeout(ug_server *srv, ug__conn *c, enum ug__tq q) {
    struct ug_request *ctx = c->ctx;
    switch (q) {
    case UG_TQ_IDLE:
        srv->stats.timeouts_idle++;
        begin_linger(srv, c);
        break;
    case UG_TQ_HEADER:
    case UG_TQ_BODY:
        if (q == UG_TQ_HEADER)
            srv->stats.timeouts_read_header++;
        else
            srv->stats.timeouts_body++;
        if (ctx && ctx->in.len > ctx->in_off && !request_live(ctx)) {
            ctx->head = 0;
            ctx->keep_alive = 0;
            ctx->parsing = 0;
            ctx->in_off = ctx->in.len;
            srv->stats.requests++;
            if (ug__resp_error(ctx, 408)) c->flags |= UG_CF_FAILED;
            ug__mark_dirty(srv, c);
        } else {
            begin_linger(srv, c);
        }
        break;
    case UG_TQ_WRITE:
        srv->stats.timeouts_write++;
        ug__conn_abort(srv, c, UG_CANCEL_CLIENT_GONE);
        break;
    case UG_TQ_HANDLER:
        if (ctx && ctx->rstate == UG_RS_DEFERRED) {
            /* Answer for the handler, then tell it: a late answer will find nothing. */
            ug_cancel_fn fn = ctx->cancel_fn;
            void *user = ctx->cancel_user;
            ctx->cancel_fn = NULL;
            srv->stats.timeouts_handler++;
            ctx->rstate = UG_RS_HANDLER;
            ctx->resp_hdrs.len = 0; /* fields a handler added were for its own answer */
            core_respond(ctx, 503, LIT_BODY("Service Unavailable\n"));
            ug__mark_dirty(srv, c); /* core_respond may have failed it: the flush closes it */
            if (fn) {
                srv->stats.requests_cancelled++;
                fn(ctx, UG_CANCEL_TIMEOUT, user);
            }
        }
        break;
    case UG_TQ_LINGER:
        if (c->state == UG_CONN_LINGER)
            ug__conn_close(srv, c, 0);
        else
            begin_linger(srv, c); /* idle through the drain linger */
        break;
    default:
        break;
    }
}

void ug__conn_drain(ug_server *srv, ug__conn *c) {
    c->flags |= UG_CF_DRAIN;
    if (c->state != UG_CONN_OPEN) return;
    /* Idle: nothing buffered, nothing live, nothing being sent (whatever queue it is in,
     * or none when its timeouts are disabled). Busy connections finish first. */
    struct ug_request *ctx = c->ctx;
    if (!(c->flags & UG_CF_SEND_INFLIGHT) &&
        (!ctx || (!request_live(ctx) && ctx->in.len == ctx->in_off))) {
        ug__tq_set(srv, c, UG_TQ_NONE);
        ug__tq_set(srv, c, UG_TQ_LINGER);
    }
}

void ug__request_answered(struct ug_request *req) {
    ug__mark_dirty(req->srv, req->conn);
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
    if (!req->http.body.len) return (ug_str){"", 0};
    return view(req, req->http.body);
}
ug_server *ug_req_server(const ug_request *req) {
    return req->srv;
}
uint64_t ug_req_id(const ug_request *req) {
    return req->id;
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
    uint32_t idx = (uint32_t)(id & UG_IDX_MAX);
    if (!id) return NULL;
    ug__conn *c = idx < srv->slots_used ? &srv->slots[idx] : NULL;
    if (!c || c->state != UG_CONN_OPEN || !c->ctx || c->ctx->id != id || !request_live(c->ctx)) {
        srv->stats.late_responses++; /* its answer, if any, is dropped by the caller */
        return NULL;
    }
    return c->ctx;
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
    if (fn && request_live(req)) fn(req, req->timer_user);
}

int ug_req_timer(ug_request *req, uint32_t ms, ug_req_timer_fn fn, void *user) {
    if (!request_live(req) || !fn) return -EINVAL;
    req->timer.fn = req_timer_fired;
    req->timer_fn = fn;
    req->timer_user = user;
    return ug__timer_start(&req->srv->timers, &req->timer, req->srv->now_ms + ms);
}
