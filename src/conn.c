/* Connection state machine: read → parse → dispatch → write → keep-alive or close.
 *
 * An idle keep-alive connection owns only its slot (struct ug__conn, 80 bytes) and an armed
 * multishot recv: no buffer. A request context (struct ug_request: input, parser, output) is
 * taken from a recycler when bytes arrive and given back when the connection is idle again
 * (request.c).
 *
 * Lifetime rule: a slot is freed, and its fd closed, only after the final completion of
 * every operation started on it (recv, send) has been seen, cancels included: until then the
 * kernel may still write into our buffers or post completions carrying this slot's user_data.
 */
#include "core.h"

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
/* A streamed body being read is parked too, and handed out at every flush: it may take more
 * before reading pauses, so that a fast upload is not paused between two flushes. */
#define STREAM_INPUT_MAX (256u * 1024)

/* ---------------------------------------------------------------- slots ---- */

static ug__conn *slot_alloc(ug__loop *lp) {
    ug__conn *c;
    if (lp->free_head != UG_NONE) {
        c = &lp->slots[lp->free_head];
        lp->free_head = c->tq_next;
    } else if (lp->slots_used < lp->nslots) {
        c = &lp->slots[lp->slots_used++];
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

/* ---------------------------------------------------------------- views ---- */

static void fire_conn_hooks(ug__loop *lp, ug__conn *c, ug_conn_state st) {
    ug_server *srv = lp->srv;
    struct sockaddr_storage peer;
    ug_conn_info info = {
        .conn_id = ug__conn_id(lp, c),
        .loop = lp->index,
        .slot = ug__conn_idx(lp, c),
        .state = st,
        .requests = c->requests,
        .bytes_in = c->bytes_in,
        .bytes_out = c->bytes_out,
    };
    if (st == UG_CS_NEW) {
        uint32_t len = sizeof peer;
        if (ug__sock_peer(c->fd, &peer, &len) == 0) {
            info.peer = &peer;
            info.peer_len = len;
        }
    }
    for (size_t i = 0; i < srv->nconn_hooks; i++)
        srv->conn_hooks[i].fn(srv, &info, srv->conn_hooks[i].user);
}

/* The hook's states are coarser than the views: NEW, then ACTIVE whenever a request starts
 * from NEW or idle, IDLE when every request is answered (or the connection idles through a
 * drain's linger), CLOSED at the end. */
void ug__conn_view(ug__loop *lp, ug__conn *c, enum ug__view v) {
    enum ug__view old = (enum ug__view)c->view;
    if (old == v) return;
    if (old != UG_VIEW_NONE) UG_GAUGE_ADD(lp->views[old], (uint32_t)-1);
    if (v != UG_VIEW_NONE) UG_GAUGE_ADD(lp->views[v], 1u);
    c->view = (uint8_t)v;
    if (!lp->srv->nconn_hooks) return;
    int was_waiting = old == UG_VIEW_NEW || old == UG_VIEW_IDLE || old == UG_VIEW_LINGER;
    if (v == UG_VIEW_NEW)
        fire_conn_hooks(lp, c, UG_CS_NEW);
    else if (v == UG_VIEW_READING && was_waiting)
        fire_conn_hooks(lp, c, UG_CS_ACTIVE);
    else if ((v == UG_VIEW_IDLE || (v == UG_VIEW_LINGER && c->state == UG_CONN_OPEN)) &&
             old != UG_VIEW_IDLE && old != UG_VIEW_LINGER)
        fire_conn_hooks(lp, c, UG_CS_IDLE);
    else if (v == UG_VIEW_NONE)
        fire_conn_hooks(lp, c, UG_CS_CLOSED);
}

static void free_slot(ug__loop *lp, ug__conn *c) {
    c->state = UG_CONN_FREE;
    c->fd = -1;
    c->tq_next = lp->free_head;
    lp->free_head = ug__conn_idx(lp, c);
}

/* ---------------------------------------------------------------- I/O ---- */

static int arm_recv(ug__loop *lp, ug__conn *c) {
    /* A paused connection is re-armed only where its pause is lifted: arming it anywhere else
     * would read on past the bound, and the pause could never end (a recv armed again). */
    assert(!(c->state == UG_CONN_OPEN && (c->flags & UG_CF_RECV_PAUSED)));
    int rc = lp->be_ops->recv(lp->be, c->fd, ug__conn_ud(lp, c, UG_OP_RECV));
    if (rc == 0) c->flags |= UG_CF_RECV_ARMED;
    return rc;
}

static int start_send(ug__loop *lp, ug__conn *c, int which) {
    struct ug_request *ctx = c->ctx;
    ctx->sending = (int8_t)which;
    ctx->iov.iov_base = ctx->out[which].p + ctx->sent;
    ctx->iov.iov_len = ctx->out[which].len - ctx->sent;
    int rc = lp->be_ops->send(lp->be, c->fd, &ctx->iov, 1, ug__conn_ud(lp, c, UG_OP_SEND));
    if (rc) return rc;
    c->flags |= UG_CF_SEND_INFLIGHT;
    ug__tq_set(lp, c, UG_TQ_WRITE);
    return 0;
}

/* Response bytes queued and not yet sent. */
static uint32_t out_pending(const struct ug_request *ctx) {
    return ctx->out[0].len + ctx->out[1].len - ctx->sent;
}

/* Output backpressure: a client that sends requests and does not read the responses gets no
 * more of its requests parsed (nor its bytes read) once this much is waiting for it... */
static int output_over(const ug__loop *lp, const struct ug_request *ctx) {
    return out_pending(ctx) > lp->max_output_bytes;
}

/* ... and reading resumes once it is down to a quarter: hysteresis, so that a client that
 * reads slowly does not make us pause and resume on every send. */
static int output_drained(const ug__loop *lp, const struct ug_request *ctx) {
    return out_pending(ctx) <= lp->max_output_bytes / 4;
}

/* A streamed body being handed out (not held back by its handler). */
static int stream_reading(const struct ug_request *ctx) {
    return ctx->body == UG_BODY_READING && !ctx->body_paused && ug__request_live(ctx);
}

/* How much input may be parked before reading pauses. */
static uint32_t parked_max(const struct ug_request *ctx) {
    return stream_reading(ctx) ? STREAM_INPUT_MAX : PARKED_INPUT_MAX;
}

/* Stop reading (counted in *why): cancel the multishot recv; its final completion clears
 * RECV_ARMED and the flush re-arms it once the reason is gone. */
static void pause_recv(ug__loop *lp, ug__conn *c, uint64_t *why) {
    if (!(c->flags & UG_CF_RECV_ARMED) || (c->flags & UG_CF_RECV_PAUSED)) return;
    __atomic_store_n(why, *why + 1, __ATOMIC_RELAXED); /* a counter: see UG_STAT_ADD */
    c->flags |= UG_CF_RECV_PAUSED;
    if (lp->be_ops->cancel(lp->be, ug__conn_ud(lp, c, UG_OP_RECV)))
        c->flags |= UG_CF_FAILED; /* no room to cancel: end it rather than read on unbounded */
}

static void set_conns(ug__loop *lp, uint32_t n) { /* read by loop 0: relaxed */
    __atomic_store_n(&lp->conns_open, n, __ATOMIC_RELAXED);
}

static void try_finalize(ug__loop *lp, ug__conn *c) {
    if (c->flags & (UG_CF_RECV_ARMED | UG_CF_SEND_INFLIGHT)) return;
    lp->be_ops->close(lp->be, c->fd);
    if (c->ctx) {
        ug__ctx_put(lp, c->ctx);
        c->ctx = NULL;
    }
    ug__tq_set(lp, c, UG_TQ_NONE);
    set_conns(lp, lp->conns_open - 1);
    UG_STAT_INC(lp, conns_closed);
    if (c->flags & UG_CF_ERROR) UG_STAT_INC(lp, conns_reset);
    /* Below max_conns again: loop 0 resumes a paused accept (woken if it is another loop's
     * connection that closed). */
    if (lp->index == 0)
        ug__listener_check_limit(lp);
    else if (atomic_load_explicit(&lp->srv->listener.paused, memory_order_relaxed))
        ug__loop_wake(lp->srv->loops[0]);
    if (ug__gate_state(lp->srv) >= UG_GATE_DRAINING) {
        if (lp->phase == UG_LOOP_FORCED)
            UG_GAUGE_ADD(lp->report.conns_forced, 1);
        else
            UG_GAUGE_ADD(lp->report.conns_drained, 1);
    }
    ug__conn_view(lp, c, UG_VIEW_NONE);
    free_slot(lp, c);
}

void ug__conn_close(ug__loop *lp, ug__conn *c, int error) {
    if (c->state == UG_CONN_CLOSING || c->state == UG_CONN_FREE) return;
    if (c->ctx && ug__request_live(c->ctx)) ug__request_cancel(lp, c->ctx, UG_CANCEL_CLIENT_GONE);
    if (error) c->flags |= UG_CF_ERROR;
    c->state = UG_CONN_CLOSING;
    ug__tq_set(lp, c, UG_TQ_NONE);
    ug__conn_view(lp, c, UG_VIEW_CLOSING);
    int failed = 0;
    if (c->flags & UG_CF_RECV_ARMED)
        failed |= lp->be_ops->cancel(lp->be, ug__conn_ud(lp, c, UG_OP_RECV)) != 0;
    if (c->flags & UG_CF_SEND_INFLIGHT)
        failed |= lp->be_ops->cancel(lp->be, ug__conn_ud(lp, c, UG_OP_SEND)) != 0;
    /* No room to cancel (SQ full): shutting the socket down completes its armed recv (EOF)
     * and send (EPIPE) just the same, so the final completions still come. */
    if (failed) lp->be_ops->shutdown(lp->be, c->fd, SHUT_RDWR);
    try_finalize(lp, c);
}

void ug__conn_abort(ug__loop *lp, ug__conn *c, ug_cancel_reason why) {
    if (c->state == UG_CONN_CLOSING || c->state == UG_CONN_FREE) return;
    if (c->ctx) ug__request_cancel(lp, c->ctx, why);
    ug__conn_close(lp, c, why != UG_CANCEL_DEADLINE);
}

/* End a connection the server could not keep going (out of memory, no submission slot). */
static void conn_failed(ug__loop *lp, ug__conn *c) {
    if (c->state == UG_CONN_CLOSING || c->state == UG_CONN_FREE) return;
    UG_STAT_INC(lp, conns_failed);
    ug__log(lp->srv, UG_LOG_WARN, "connection ended: out of memory or submission slots");
    if (c->ctx) ug__request_cancel(lp, c->ctx, UG_CANCEL_SERVER_ERROR);
    ug__conn_close(lp, c, 1);
}

/* Close politely: our FIN goes out after the last response, then we keep reading (and
 * discarding) until the client closes or the linger ends. Closing with unread input in the
 * socket would make the kernel send a reset, which can destroy the response the client has
 * not read yet. */
static void begin_linger(ug__loop *lp, ug__conn *c) {
    if (c->ctx) {
        ug__ctx_put(lp, c->ctx);
        c->ctx = NULL;
    }
    /* Paused reading resumes: lingering must read what the client sends, or the close would
     * reset the connection. A pause's cancel still in flight re-arms when its final
     * completion arrives (ug__conn_on_recv, LINGER). */
    if (c->flags & UG_CF_RECV_PAUSED) {
        c->flags &= (uint16_t)~UG_CF_RECV_PAUSED;
        if (!(c->flags & UG_CF_RECV_ARMED) && arm_recv(lp, c)) {
            conn_failed(lp, c);
            return;
        }
    }
    if (!(c->flags & UG_CF_RECV_ARMED)) { /* the peer already closed its side */
        ug__conn_close(lp, c, 0);
        return;
    }
    lp->be_ops->shutdown(lp->be, c->fd, SHUT_WR);
    c->state = UG_CONN_LINGER;
    ug__tq_set(lp, c, UG_TQ_NONE);
    ug__tq_set(lp, c, UG_TQ_LINGER);
}

/* Decide what the connection waits for now, and give the context back if it is idle. */
static void settle(ug__loop *lp, ug__conn *c) {
    struct ug_request *ctx = c->ctx;
    if (c->flags & UG_CF_SEND_INFLIGHT) return; /* in the write queue */
    if (ctx && ug__request_live(ctx)) {
        /* Waiting for the handler; a stream in progress is bounded by the write timeout; a
         * streamed body being read, by the body timeout between its pieces. */
        if (stream_reading(ctx)) {
            ug__tq_set(lp, c, UG_TQ_BODY);
            ug__conn_view(lp, c, UG_VIEW_READING);
            return;
        }
        ug__tq_set(lp, c, ctx->rstate == UG_RS_DEFERRED ? UG_TQ_HANDLER : UG_TQ_NONE);
        ug__conn_view(lp, c, UG_VIEW_HANDLER);
        return;
    }
    if (ctx && ctx->in.len > ctx->in_off) {
        ug__tq_set(lp, c, ctx->parsing && ctx->http.header_bytes ? UG_TQ_BODY : UG_TQ_HEADER);
        return;
    }
    if (ctx) {
        ug__ctx_put(lp, ctx);
        c->ctx = NULL;
    }
    if (c->flags & UG_CF_CLOSE_AFTER) {
        begin_linger(lp, c);
        return;
    }
    /* During a drain an idle keep-alive connection is not slammed shut: a request racing
     * in during the linger is still served (with Connection: close). */
    ug__tq_set(lp, c, (c->flags & UG_CF_DRAIN) ? UG_TQ_LINGER : UG_TQ_IDLE);
}

static void count_limit(ug__loop *lp, const ug__http_req *h) {
    switch (h->error_status) {
    case 431:
        if (h->error_reason && !strcmp(h->error_reason, UG_HTTP_REASON_TOO_MANY_HEADERS))
            UG_STAT_INC(lp, limit_headers);
        else
            UG_STAT_INC(lp, limit_header_bytes);
        break;
    case 414:
        UG_STAT_INC(lp, limit_uri);
        break;
    case 413:
        UG_STAT_INC(lp, limit_body);
        break;
    default:
        break;
    }
}

/* The parser (or the header or body timeout) refused the request in progress. */
static void rejected(ug__loop *lp, ug__conn *c, int status) {
    struct ug_request *ctx = c->ctx;
    if (ug__resp_error(ctx, status) == 0) {
        ug__request_done(lp, ctx, UG_END_REJECTED, 0);
        return;
    }
    c->flags |= UG_CF_FAILED;
    ug__request_done(lp, ctx, UG_END_CANCELLED, UG_CANCEL_SERVER_ERROR);
}

/* The head is in: route it, and give the body its limit (the route's), and a streamed
 * route its request now. UG_HTTP_HEADERS_DONE, or the parser's verdict on the body
 * (UG_HTTP_ERROR). */
static int head_done(ug__loop *lp, ug__conn *c, struct ug_request *ctx) {
    int path_hit;
    ctx->route = ug__router_find(&lp->srv->router, ug_req_method(ctx), ug_req_path(ctx), &path_hit);
    ctx->path_hit = (uint8_t)path_hit;
    ctx->body = UG_BODY_BUFFERED;
    int stream = ctx->route && (ctx->route->flags & UG_ROUTE_STREAM_BODY);
    uint64_t limit =
        ctx->route && ctx->route->max_body ? ctx->route->max_body : lp->srv->cfg.max_body_bytes;
    if (ug__http_body_begin(&ctx->http, limit, stream) == UG_HTTP_ERROR) return UG_HTTP_ERROR;
    if (stream) {
        if (ug__body_begin(lp, ctx)) {
            c->flags |= UG_CF_FAILED;
            return UG_HTTP_HEADERS_DONE;
        }
        ug__request_dispatch(lp, c, ctx);
        return UG_HTTP_HEADERS_DONE;
    }
    /* Ask for the body only if the client is waiting for our go-ahead. */
    if ((ctx->http.flags & UG_HTTP_EXPECT_CONTINUE) && !ctx->continue_sent &&
        ctx->http.consumed == ctx->in.len - ctx->in_off && !(c->flags & UG_CF_DRAIN)) {
        ctx->continue_sent = 1;
        if (ug__resp_continue(ctx)) c->flags |= UG_CF_FAILED;
    }
    return UG_HTTP_HEADERS_DONE;
}

/* Parse and dispatch every complete request in the buffer, in order, until one is deferred
 * or the input runs out. Responses accumulate in the output buffer. */
static void process(ug__loop *lp, ug__conn *c) {
    struct ug_request *ctx = c->ctx;
    for (;;) {
        if (ctx->body == UG_BODY_READING) ug__body_pump(lp, c);
        if ((c->flags & UG_CF_PEER_EOF) && ctx->body != UG_BODY_BUFFERED && ug__request_live(ctx))
            ug__body_peer_eof(lp, c);
        if (ctx->rstate == UG_RS_ANSWERED) ug__request_finish(lp, ctx);
        if (ctx->rstate != UG_RS_NONE || (c->flags & UG_CF_FAILED)) break;
        if (c->flags & UG_CF_CLOSE_AFTER) { /* nothing after a closing response is read */
            ctx->in_off = ctx->in.len;
            break;
        }
        /* Backpressure: requests are parsed ahead only while the client reads. */
        if (output_over(lp, ctx)) break;
        uint32_t avail = ctx->in.len - ctx->in_off;
        if (!avail) break;
        if (!ctx->parsing) {
            ug__http_req_init(&ctx->http, lp->limits, ctx->headers);
            ctx->parsing = 1;
            ctx->continue_sent = 0;
            ctx->status = 0;
            ctx->t_start_ns = lp->now_ns;
            ctx->request_id = (ug_str){NULL, 0}; /* set at dispatch */
        }
        char *base = ctx->in.p + ctx->in_off;
        int r = ug__http_parse(&ctx->http, base, avail);
        if (r == UG_HTTP_NEED_MORE) break;
        if (r == UG_HTTP_HEADERS_DONE) r = head_done(lp, c, ctx);
        if (r == UG_HTTP_HEADERS_DONE) continue; /* on to the body, or to the chain */
        if (r == UG_HTTP_ERROR) {
            UG_STAT_INC(lp, requests);
            UG_STAT_INC(lp, bad_requests);
            count_limit(lp, &ctx->http);
            /* The parser's flags come with the whole head: a HEAD refused before it ends
             * (414, 431, a bad field) is still answered without a body (RFC 9110 9.3.2). */
            ctx->head = (ctx->http.flags & UG_HTTP_HEAD) != 0 || ug__http_starts_head(base, avail);
            ctx->keep_alive = 0;
            rejected(lp, c, ctx->http.error_status);
            ctx->parsing = 0;
            ctx->in_off = ctx->in.len;
            break;
        }
        ug__request_dispatch(lp, c, ctx);
    }
    /* After the client's EOF, what is left unparsed is an incomplete request that can never
     * complete now; unless parsing stopped for backpressure, with complete ones still to go. */
    if ((c->flags & UG_CF_PEER_EOF) && !ug__request_live(ctx) && !output_over(lp, ctx)) {
        ctx->in_off = ctx->in.len;
        c->flags |= UG_CF_CLOSE_AFTER;
    }
    if (!ug__request_live(ctx) && ctx->in_off) {
        memmove(ctx->in.p, ctx->in.p + ctx->in_off, ctx->in.len - ctx->in_off);
        ctx->in.len -= ctx->in_off;
        ctx->in_off = 0;
    }
}

void ug__conn_flush(ug__loop *lp, ug__conn *c) {
    if (c->state != UG_CONN_OPEN) return;
    struct ug_request *ctx = c->ctx;
    if (ctx) {
        process(lp, c);
        if (c->state != UG_CONN_OPEN) return;
        if (c->flags & UG_CF_FAILED) {
            conn_failed(lp, c);
            return;
        }
        if (!(c->flags & UG_CF_SEND_INFLIGHT) && ctx->out[0].len && start_send(lp, c, 0) != 0) {
            conn_failed(lp, c);
            return;
        }
        if (output_over(lp, ctx)) {
            pause_recv(lp, c, &lp->stats.output_pauses);
            if (c->flags & UG_CF_FAILED) {
                conn_failed(lp, c);
                return;
            }
        }
    }
    /* Reading was paused by cancelling the recv: resume once its final completion has been
     * seen, the parked input is consumed and the output has drained (the context may be
     * gone by then). */
    if ((c->flags & UG_CF_RECV_PAUSED) && !(c->flags & UG_CF_RECV_ARMED) &&
        (!ctx || (!ug__request_live(ctx) && ctx->parked.len == 0 && output_drained(lp, ctx)) ||
         (stream_reading(ctx) && ctx->parked.len <= parked_max(ctx) / 4 &&
          output_drained(lp, ctx)))) {
        c->flags &= (uint16_t)~UG_CF_RECV_PAUSED;
        if (arm_recv(lp, c)) {
            conn_failed(lp, c);
            return;
        }
    }
    if (ctx || c->tq == UG_TQ_NONE) settle(lp, c);
}

/* ---------------------------------------------------------------- completions ---- */

void ug__conn_accepted(ug__loop *lp, int fd) {
    /* After the deadline or an immediate stop (which this loop may not have acted on yet),
     * a connection taken from the queue or handed over is closed at once. */
    if (lp->phase != UG_LOOP_FORCED && ug__gate_forcing(lp->srv))
        ug__gate_force_loop(lp, UG_CANCEL_DEADLINE);
    ug__conn *c = slot_alloc(lp);
    if (!c) { /* the gate pauses before this can happen; belt and braces */
        ug__log(lp->srv, UG_LOG_ERROR, "no connection slot free: closing accepted fd");
        lp->be_ops->close(lp->be, fd);
        return;
    }
    c->fd = fd;
    c->t_open_ms = c->t_active_ms = lp->now_ms;
    c->bytes_in = c->bytes_out = 0;
    c->requests = 0;
    c->view = UG_VIEW_NONE;
    set_conns(lp, lp->conns_open + 1);
    UG_STAT_INC(lp, conns_accepted);
    ug__conn_view(lp, c, UG_VIEW_NEW);
    if (lp->phase == UG_LOOP_FORCED) { /* nothing is armed yet: finalized (and counted as */
        c->state = UG_CONN_CLOSING;    /* forced) at once */
        try_finalize(lp, c);
        return;
    }
    if (!lp->srv->listener.nodelay) ug__sock_set_nodelay(fd);
    if (ug__gate_state(lp->srv) >= UG_GATE_DRAINING) c->flags |= UG_CF_DRAIN;
    if (arm_recv(lp, c)) {
        conn_failed(lp, c);
        return;
    }
    ug__tq_set(lp, c, (c->flags & UG_CF_DRAIN) ? UG_TQ_LINGER : UG_TQ_HEADER);
}

void ug__conn_on_recv(ug__loop *lp, ug__conn *c, const ug__completion *cq) {
    int more = (cq->flags & UG__CF_MORE) != 0;
    if (!more) c->flags &= (uint16_t)~UG_CF_RECV_ARMED;
    if (cq->res > 0) {
        int keep = 0;
        c->bytes_in += (uint64_t)cq->res;
        c->t_active_ms = lp->now_ms;
        if (c->state == UG_CONN_OPEN) {
            if (!c->ctx && !(c->ctx = ug__ctx_get(lp))) {
                lp->be_ops->recv_release(lp->be, cq->buf_id);
                conn_failed(lp, c);
                return;
            }
            struct ug_request *ctx = c->ctx;
            ctx->conn = c;
            /* While a request is being handled its views point into ctx->in: park the bytes
             * instead of growing (and maybe moving) that buffer. */
            /* Bytes queue behind older parked bytes too: appending them to in ahead of those
             * would reorder the client's stream. */
            ug__buf *dst = ug__request_live(ctx) || ctx->parked.len ? &ctx->parked : &ctx->in;
            keep = ug__buf_append(dst, cq->data, (size_t)cq->res) == 0;
            if (keep && dst == &ctx->parked && ctx->parked.len > parked_max(ctx))
                pause_recv(lp, c, &lp->stats.input_pauses);
        }
        if (cq->flags & UG__CF_BUFFER) lp->be_ops->recv_release(lp->be, cq->buf_id);
        if (c->state == UG_CONN_OPEN) {
            if (!keep) {
                conn_failed(lp, c);
                return;
            }
            if (c->tq == UG_TQ_BODY) ug__tq_touch(lp, c); /* the body timeout is a gap */
            /* Bytes of a new request: the idle wait (or the drain linger) is over, even if
             * the deadline passes before this batch is flushed. */
            if (c->tq == UG_TQ_IDLE || c->tq == UG_TQ_LINGER) ug__tq_set(lp, c, UG_TQ_HEADER);
            if (c->view == UG_VIEW_NEW || c->view == UG_VIEW_IDLE || c->view == UG_VIEW_LINGER)
                ug__conn_view(lp, c, UG_VIEW_READING); /* also with the timeouts disabled */
            if (!more && !(c->flags & UG_CF_RECV_PAUSED)) {
                if (arm_recv(lp, c) == 0)
                    UG_STAT_INC(lp, recv_rearms);
                else /* can't read on: answer what is buffered, then close (like EOF) */
                    c->flags |= UG_CF_PEER_EOF;
            }
            ug__mark_dirty(lp, c);
        } else if (c->state == UG_CONN_LINGER && !more && arm_recv(lp, c)) {
            conn_failed(lp, c);
        } else if (c->state == UG_CONN_CLOSING) {
            try_finalize(lp, c);
        }
        return;
    }
    if (cq->flags & UG__CF_BUFFER) lp->be_ops->recv_release(lp->be, cq->buf_id);
    if (cq->res == -ENOBUFS && c->state != UG_CONN_CLOSING) {
        if (c->state == UG_CONN_OPEN && (c->flags & UG_CF_RECV_PAUSED)) {
            /* Paused, and the recv ended by itself before the pause's cancel reached it (the
             * cancel then finds nothing): this is the pause's final completion. Re-arming
             * here would read on past the bound, for good. */
            ug__mark_dirty(lp, c);
            return;
        }
        /* The pool ran dry for a moment (buffers go back at the end of this batch). */
        UG_STAT_INC(lp, recv_rearms);
        if (arm_recv(lp, c) == 0) return;
        /* Can't read on: like the same failure after data, answer what is buffered (and
         * what is being sent), then close, as after an EOF. */
        if (c->state == UG_CONN_LINGER) {
            conn_failed(lp, c);
            return;
        }
        c->flags |= UG_CF_PEER_EOF;
        ug__mark_dirty(lp, c);
        return;
    }
    if (cq->res == -ECANCELED && c->state == UG_CONN_OPEN) { /* paused by us */
        if (!(c->flags & UG_CF_RECV_PAUSED))
            ug__conn_close(lp, c, 1);
        else
            ug__mark_dirty(lp, c); /* the flush re-arms once the request is answered */
        return;
    }
    if (c->state == UG_CONN_CLOSING) {
        try_finalize(lp, c);
        return;
    }
    if (c->state == UG_CONN_LINGER) {
        /* A pause's cancel (begin_linger): keep reading. EOF or an error: the client is done. */
        if (cq->res == -ECANCELED) {
            if (arm_recv(lp, c)) conn_failed(lp, c);
            return;
        }
        ug__conn_close(lp, c, 0);
        return;
    }
    if (cq->res == 0) {
        /* EOF. A deferred handler's client is gone (Go's rule: a half-closed client is
         * treated as gone). Complete requests already buffered are still answered. */
        struct ug_request *ctx = c->ctx;
        if (ctx && ug__request_live(ctx) && ctx->body != UG_BODY_BUFFERED &&
            ctx->body != UG_BODY_DONE) {
            /* A streamed body's bytes before the FIN are handed out first (ug__body_peer_eof
             * then judges). */
            c->flags |= UG_CF_PEER_EOF;
            ug__mark_dirty(lp, c);
            return;
        }
        if (ctx && ug__request_live(ctx)) {
            ug__conn_abort(lp, c, UG_CANCEL_CLIENT_GONE);
            return;
        }
        c->flags |= UG_CF_PEER_EOF;
        if (ctx && ctx->in.len > ctx->in_off) {
            ug__mark_dirty(lp, c); /* answer what is complete; the rest is dropped */
            return;
        }
        c->flags |= UG_CF_CLOSE_AFTER;
        if (c->flags & UG_CF_SEND_INFLIGHT) return; /* closes when the send completes */
        ug__conn_close(lp, c, 0);
        return;
    }
    ug__conn_abort(lp, c, UG_CANCEL_CLIENT_GONE); /* reset, or another error */
}

void ug__conn_on_send(ug__loop *lp, ug__conn *c, const ug__completion *cq) {
    c->flags &= (uint16_t)~UG_CF_SEND_INFLIGHT;
    struct ug_request *ctx = c->ctx;
    if (c->state != UG_CONN_OPEN || !ctx) {
        if (c->state == UG_CONN_CLOSING) try_finalize(lp, c);
        return;
    }
    if (cq->res <= 0) {
        ug__conn_abort(lp, c, UG_CANCEL_CLIENT_GONE);
        return;
    }
    ug__buf *ob = &ctx->out[ctx->sending];
    ctx->sent += (uint32_t)cq->res;
    c->bytes_out += (uint64_t)cq->res;
    c->t_active_ms = lp->now_ms;
    if (ctx->sent < ob->len) { /* short write: send the rest */
        ug__tq_set(lp, c, UG_TQ_NONE);
        if (start_send(lp, c, ctx->sending)) conn_failed(lp, c);
        return;
    }
    ob->len = 0;
    ctx->sent = 0;
    int next = !ctx->sending;
    ctx->sending = -1;
    if (ctx->out[next].len) { /* appended while the first was in flight: keep order */
        ug__tq_set(lp, c, UG_TQ_NONE);
        if (start_send(lp, c, next)) conn_failed(lp, c);
        return;
    }
    ug__tq_set(lp, c, UG_TQ_NONE);
    ug__mark_dirty(lp, c); /* parse what arrived meanwhile; settle timeouts */
}

void ug__conn_timeout(ug__loop *lp, ug__conn *c, enum ug__tq q) {
    struct ug_request *ctx = c->ctx;
    switch (q) {
    case UG_TQ_IDLE:
        UG_STAT_INC(lp, timeouts_idle);
        begin_linger(lp, c);
        break;
    case UG_TQ_HEADER:
    case UG_TQ_BODY:
        /* Answered since the last flush (a streamed body's request, from a timer or a post
         * in this turn) and still in the body queue: the bytes in 'in' are its own, not a
         * new request's to refuse with 408 (a second report, a second response), nor is the
         * connection to linger with its answer unsent. The flush it is marked for finishes
         * it and settles the connection. */
        if (ctx && ctx->rstate == UG_RS_ANSWERED) {
            ug__mark_dirty(lp, c);
            break;
        }
        if (q == UG_TQ_HEADER)
            UG_STAT_INC(lp, timeouts_read_header);
        else
            UG_STAT_INC(lp, timeouts_body);
        if (ctx && ctx->in.len > ctx->in_off && !ug__request_live(ctx)) {
            ctx->head = 0;
            ctx->keep_alive = 0;
            if (!ctx->parsing) { /* not begun (backpressure): no view of an older request */
                ug__http_req_init(&ctx->http, lp->limits, ctx->headers);
                ctx->status = 0;
                ctx->t_start_ns = lp->now_ns;
                ctx->request_id = (ug_str){NULL, 0};
            }
            UG_STAT_INC(lp, requests);
            /* Before the input is dropped: the hooks read the request's views from it. */
            rejected(lp, c, 408);
            ctx->parsing = 0;
            ctx->in_off = ctx->in.len;
            ug__mark_dirty(lp, c);
        } else if (q == UG_TQ_BODY && ctx && ctx->body == UG_BODY_READING &&
                   ug__request_live(ctx)) {
            ug__body_refuse(lp, ctx, 408, UG_CANCEL_TIMEOUT); /* between two pieces */
        } else {
            begin_linger(lp, c);
        }
        break;
    case UG_TQ_WRITE:
        UG_STAT_INC(lp, timeouts_write);
        ug__conn_abort(lp, c, UG_CANCEL_CLIENT_GONE);
        break;
    case UG_TQ_HANDLER:
        if (ctx && ctx->rstate == UG_RS_DEFERRED) ug__request_timed_out(lp, ctx);
        break;
    case UG_TQ_LINGER:
        if (c->state == UG_CONN_LINGER)
            ug__conn_close(lp, c, 0);
        else
            begin_linger(lp, c); /* idle through the drain linger */
        break;
    default:
        break;
    }
}

void ug__conn_drain(ug__loop *lp, ug__conn *c) {
    c->flags |= UG_CF_DRAIN;
    if (c->state != UG_CONN_OPEN) return;
    /* Idle: nothing buffered, nothing live, nothing being sent (whatever queue it is in,
     * or none when its timeouts are disabled). Busy connections finish first. */
    struct ug_request *ctx = c->ctx;
    if (!(c->flags & UG_CF_SEND_INFLIGHT) &&
        (!ctx || (!ug__request_live(ctx) && ctx->in.len == ctx->in_off))) {
        ug__tq_set(lp, c, UG_TQ_NONE);
        ug__tq_set(lp, c, UG_TQ_LINGER);
    }
}

/* ug_server_free: requests still waiting hear about it (why), every descriptor is closed. */
void ug__conn_free_all(ug__loop *lp, ug_cancel_reason why) {
    for (uint32_t i = 0; i < lp->slots_used; i++) {
        ug__conn *c = &lp->slots[i];
        if (c->state == UG_CONN_FREE) continue;
        if (c->ctx) {
            ug__request_cancel(lp, c->ctx, why);
            ug__ctx_put(lp, c->ctx);
            c->ctx = NULL;
        }
        close(c->fd);
        free_slot(lp, c);
    }
}
