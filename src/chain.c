/* Middleware chains: the global middlewares (ug_use), the route's (ug_route_use), then the
 * route's handler or the core's 404 / 405, and the misuse the chain can detect.
 *
 * One element holds the request at a time (chain_at): it answers, defers, or hands it to the
 * next with ug_next. The token an element gets (ug_next) carries its position, so a second
 * ug_next from the same element is told from the first by position alone, however late it
 * comes. Every element's call runs inside the call of the one before it (as Go's handlers
 * wrap each other); the state after a call is judged only by the element still holding the
 * request, since those before it have passed it on. */
#include "core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LIT_BODY(s) (s), (sizeof(s) - 1)

static uint32_t chain_len(const struct ug_request *ctx) {
    const ug_server *srv = ctx->loop->srv;
    return srv->nmw + (ctx->route ? ctx->route->nmw : 0);
}

static const ug__mw *chain_mw(const struct ug_request *ctx, uint32_t pos) {
    const ug_server *srv = ctx->loop->srv;
    return pos < srv->nmw ? &srv->mw[pos] : &ctx->route->mw[pos - srv->nmw];
}

void ug__chain_misuse(struct ug_request *ctx, uint32_t pos, const char *what) {
    ug__loop *lp = ctx->loop;
    UG_STAT_INC(lp, middleware_misuse);
    if (pos == UG__CHAIN_NONE)
        pos = ctx->chain_running != UG__CHAIN_NONE ? ctx->chain_running : ctx->chain_at;
    if (pos < chain_len(ctx))
        ug__log(lp->srv, UG_LOG_WARN, "middleware \"%s\": %s", chain_mw(ctx, pos)->name, what);
    else if (ctx->route)
        ug__log(lp->srv, UG_LOG_WARN, "handler of %s %s: %s",
                ctx->route->method ? ctx->route->method : "*", ctx->route->path, what);
    else
        ug__log(lp->srv, UG_LOG_WARN, "the core's answer: %s", what);
}

/* The element at pos returned res still holding the request. */
static void held_result(ug__loop *lp, struct ug_request *ctx, uint32_t pos, ug_handler_result res) {
    ug__conn *c = ctx->conn;
    if (ctx->rstate == UG_RS_HANDLER) {
        if (res == UG_LATER) {
            ctx->rstate = UG_RS_DEFERRED;
            return;
        }
        /* Neither answered nor deferred nor passed on: the client must not hang. */
        if (pos < chain_len(ctx)) {
            ug__chain_misuse(ctx, pos,
                             "returned UG_DONE without answering or passing the request on: 500");
        } else {
            UG_STAT_INC(lp, handler_no_response);
            ug__log(lp->srv, UG_LOG_WARN, "handler returned UG_DONE without responding: 500");
        }
        if (ug__resp_error(ctx, 500)) {
            c->flags |= UG_CF_FAILED;
            ug__request_done(lp, ctx, UG_END_CANCELLED, UG_CANCEL_SERVER_ERROR);
        } else {
            ug__request_done(lp, ctx, UG_END_ANSWERED, 0);
        }
        ctx->rstate = UG_RS_ANSWERED;
        ug__mark_dirty(lp, c);
    } else if (ctx->rstate == UG_RS_STREAMING && res == UG_DONE) {
        /* Returned mid-stream without deferring: the body can't be completed. Send what is
         * queued and close, so the client sees a truncated chunked body, not a hang. */
        if (pos < chain_len(ctx)) {
            ug__chain_misuse(ctx, pos, "returned UG_DONE mid-stream: closing");
        } else {
            UG_STAT_INC(lp, handler_no_response);
            ug__log(lp->srv, UG_LOG_WARN, "handler returned UG_DONE mid-stream: closing");
        }
        c->flags |= UG_CF_CLOSE_AFTER;
        ug__request_done(lp, ctx, UG_END_ANSWERED, 0);
        ctx->rstate = UG_RS_ANSWERED;
        ug__mark_dirty(lp, c);
    }
}

/* The core's last element when no route matched. */
static void core_final(struct ug_request *ctx) {
    int st = ctx->path_hit ? 405 : 404;
    int rc = st == 405 ? ug_resp_send(ctx, 405, "text/plain", LIT_BODY("Method Not Allowed\n"))
                       : ug_resp_send(ctx, 404, "text/plain", LIT_BODY("Not Found\n"));
    if (rc == 0 || ctx->rstate != UG_RS_HANDLER) return; /* answered, or a middleware did */
    /* Out of memory: the connection ends; no request may be left without answer. */
    ug__request_done(ctx->loop, ctx, UG_END_CANCELLED, UG_CANCEL_SERVER_ERROR);
    ctx->rstate = UG_RS_NONE;
    ctx->id = 0;
    ctx->conn->flags |= UG_CF_FAILED;
}

static void run_element(ug__loop *lp, struct ug_request *ctx, uint32_t pos) {
    uint32_t n = chain_len(ctx);
    uint32_t outer = ctx->chain_running;
    ctx->chain_at = pos;
    ctx->chain_running = pos;
    ug_handler_result res = UG_DONE;
    if (pos < n) {
        const ug__mw *m = chain_mw(ctx, pos);
        res = m->fn(ctx, (ug_chain_pos){ctx->id, pos}, m->user);
    } else if (ctx->route) {
        res = ctx->route->fn(ctx, ctx->route->user);
    } else {
        core_final(ctx);
    }
    ctx->chain_running = outer;
    if (ctx->chain_at == pos && ctx->id) held_result(lp, ctx, pos, res);
}

void ug__chain_start(ug__loop *lp, struct ug_request *ctx) {
    ctx->chain_running = UG__CHAIN_NONE;
    run_element(lp, ctx, 0);
}

int ug_next(ug_request *req, ug_chain_pos next) {
    if (!req || !next.request_id) return -EINVAL;
    if (req->id != next.request_id) return -ESTALE;
    if (next.pos >= chain_len(req)) return -EINVAL; /* the handler has no next */
    if (req->chain_at < next.pos) return -EINVAL;   /* not given out yet: forged */
    if (req->chain_at != next.pos) {
        ug__chain_misuse(req, next.pos, "ug_next called twice");
        return -EALREADY;
    }
    if (req->rstate != UG_RS_HANDLER && req->rstate != UG_RS_DEFERRED) {
        ug__chain_misuse(req, next.pos, "ug_next called after the response was started");
        return -EALREADY;
    }
    req->cancel_fn = NULL; /* what it deferred for is over: the next element sets its own */
    /* From deferred work: the request is in the handler again while the rest runs. */
    if (req->rstate == UG_RS_DEFERRED) req->rstate = UG_RS_HANDLER;
    run_element(req->loop, req, next.pos + 1);
    return 0;
}

int ug_req_on_complete(ug_request *req, ug_completion_fn fn, void *user) {
    if (!req || !fn || !ug__request_live(req)) return -EINVAL;
    if (req->ndone >= UG_REQ_ON_COMPLETE_MAX) return -ENOSPC;
    req->done[req->ndone++] = (ug__req_done){fn, user};
    return 0;
}

/* ---------------------------------------------------------------- registration ---- */

static int add_mw(ug_server *srv, ug__mw **v, uint32_t *n, const char *name, ug_middleware_fn fn,
                  void *user) {
    if (!name || !fn) return -EINVAL;
    if (srv->running) return -EBUSY;
    ug__mw *grown = ug__realloc(*v, (*n + 1) * sizeof **v);
    if (!grown) return -ENOMEM;
    ug__mw *m = &grown[*n];
    memset(m, 0, sizeof *m);
    size_t len = strlen(name);
    memcpy(m->name, name, len < UG_MIDDLEWARE_NAME_MAX ? len : UG_MIDDLEWARE_NAME_MAX);
    m->fn = fn;
    m->user = user;
    *v = grown;
    (*n)++;
    return 0;
}

int ug_use(ug_server *srv, const char *name, ug_middleware_fn fn, void *user) {
    if (!srv) return -EINVAL;
    return add_mw(srv, &srv->mw, &srv->nmw, name, fn, user);
}

int ug_route_use(ug_server *srv, const char *method, const char *path, const char *name,
                 ug_middleware_fn fn, void *user) {
    if (!srv || !path) return -EINVAL;
    if (srv->running) return -EBUSY;
    ug__route *r = ug__router_get(&srv->router, method, path);
    if (!r) return -ENOENT;
    return add_mw(srv, &r->mw, &r->nmw, name, fn, user);
}

void ug__chain_free(ug_server *srv) {
    free(srv->mw);
    srv->mw = NULL;
    srv->nmw = 0;
}
