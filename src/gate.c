/* The accept gate: shutdown requests, lame duck, the close point, the drain, the deadline,
 * and how the loops follow it.
 *
 * Loop 0 alone makes the transitions (OPEN → LAME_DUCK → DRAINING), each once, and publishes
 * them in gate.state; the close point is its transition to DRAINING, where it stops the
 * listener (listener.c) so that nothing is accepted after it. Every loop, on its next turn,
 * follows: its connections drain (the pipelined requests already received are answered, idle
 * ones linger), and its own deadline timer is armed at the one absolute deadline loop 0 set
 * before publishing DRAINING. At the deadline, or on an immediate stop, gate.forcing makes
 * every loop end what it still holds, and the first loop to force drops the holds. A loop
 * ends when the gate is DRAINING, the listener is closed (nothing more can be handed to it),
 * it has no connection left and no hold is outstanding; the run returns when every loop has
 * ended. Loop 0 may end before the others: nothing after its end depends on it (the holds
 * are dropped by whichever loop forces, an immediate stop past the close point is published
 * by its caller, and loop 0 does not end with a request it has not acted on).
 */
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_DRAIN_TIMEOUT_MS 30000u

static ug__loop *loop0(ug_server *srv) {
    return srv->loops[0];
}

void ug__gate_wake_all(ug_server *srv) {
    for (uint32_t i = 0; i < srv->nloops; i++) ug__loop_wake(srv->loops[i]);
}

static void set_state(ug_server *srv, ug_gate_state st) {
    atomic_store_explicit(&srv->gate.state, (int)st, memory_order_release);
}

static void run_hooks(ug_server *srv, ug_gate_state st) {
    for (size_t i = 0; i < srv->nhooks; i++) srv->hooks[i].fn(srv, st, srv->hooks[i].user);
}

/* ---------------------------------------------------------------- loop 0: transitions ---- */

/* OPEN/LAME_DUCK → DRAINING, once: the close point. Never inlined: its fence stays out of
 * the functions every loop turn runs (tools/check-hot-path). */
__attribute__((noinline)) static void gate_close(ug__loop *lp0, uint32_t timeout_ms) {
    ug_server *srv = lp0->srv;
    ug__gate *g = &srv->gate;
    int st = ug__gate_state(srv);
    if (st >= UG_GATE_DRAINING) return;
    if (st == UG_GATE_LAME_DUCK)
        srv->report.lame_duck_us = (lp0->now_ms - g->t_lame_duck_ms) * 1000u;
    ug__timer_stop(&lp0->timers, &g->lame_duck_timer);
    g->t_close_ms = lp0->now_ms;
    atomic_store_explicit(&g->close_ns, lp0->now_ns, memory_order_relaxed);
    srv->report.conns_at_close = ug__server_load(srv);
    atomic_store_explicit(&g->conns_at_close, srv->report.conns_at_close, memory_order_relaxed);
    ug__log(srv, UG_LOG_INFO, "gate closing: %llu connection(s) open, deadline %u ms",
            (unsigned long long)srv->report.conns_at_close, timeout_ms);
    /* The deadline and the forcing are set before DRAINING is published: a loop that sees
     * DRAINING (acquire) sees them too. */
    atomic_store_explicit(&g->deadline_ns, lp0->now_ns + (uint64_t)timeout_ms * 1000000u,
                          memory_order_relaxed);
    if (timeout_ms == 0)
        atomic_store_explicit(&g->forcing, UG_FORCE_IMMEDIATE, memory_order_relaxed);
    set_state(srv, UG_GATE_DRAINING);
    /* Against ug_server_shutdown, which stores req and then loads state: this stores state
     * and then (ug__gate_done) loads req. With a full fence on both sides, a request this
     * loop has not seen finds DRAINING and is published by its caller, or keeps loop 0 from
     * ending until it has acted on it. */
    atomic_thread_fence(memory_order_seq_cst);
    ug__listener_gate_closed(lp0);
    run_hooks(srv, UG_GATE_DRAINING);
    ug__gate_wake_all(srv);
}

static void lame_duck_over(ug__timer *t, void *arg) {
    (void)t;
    ug__loop *lp0 = arg;
    gate_close(lp0, atomic_load(&lp0->srv->gate.timeout_ms));
}

int ug__gate_init(ug_server *srv) {
    ug__gate *g = &srv->gate;
    atomic_init(&g->state, UG_GATE_OPEN);
    atomic_init(&g->req, UG_SD_NONE);
    atomic_init(&g->opts_claimed, 0);
    atomic_init(&g->opts_ready, 0);
    atomic_init(&g->delay_ms, 0);
    atomic_init(&g->timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS);
    atomic_init(&g->handoff, 0);
    atomic_init(&g->deadline_ns, 0);
    atomic_init(&g->forcing, UG_FORCE_NONE);
    atomic_init(&g->holds, 0u);
    atomic_init(&g->close_ns, 0);
    atomic_init(&g->end_ns, 0);
    atomic_init(&g->conns_at_close, 0);
    return ug__timer_init_reserved(&loop0(srv)->timers, &g->lame_duck_timer, lame_duck_over);
}

/* Apply shutdown requests stored by ug_server_shutdown (any thread, or a signal handler). */
static void check_shutdown(ug__loop *lp0) {
    ug_server *srv = lp0->srv;
    ug__gate *g = &srv->gate;
    int req = atomic_load_explicit(&g->req, memory_order_acquire);
    if (req <= g->seen_req) return;
    if (!atomic_load_explicit(&g->opts_ready, memory_order_acquire)) return;
    int first = g->seen_req == UG_SD_NONE;
    g->seen_req = req;
    if (req == UG_SD_IMMEDIATE) {
        if (ug__gate_state(srv) < UG_GATE_DRAINING) {
            gate_close(lp0, 0);
        } else {
            atomic_store_explicit(&g->forcing, UG_FORCE_IMMEDIATE, memory_order_relaxed);
            ug__gate_wake_all(srv);
        }
        return;
    }
    if (!first) return;
    uint32_t delay = atomic_load(&g->delay_ms);
    if (delay) {
        ug__log(srv, UG_LOG_INFO, "lame duck for %u ms: %llu connection(s) open", delay,
                (unsigned long long)ug__server_load(srv));
        set_state(srv, UG_GATE_LAME_DUCK);
        g->t_lame_duck_ms = lp0->now_ms;
        int rc = ug__timer_start(&lp0->timers, &g->lame_duck_timer, lp0->now_ms + delay);
        assert(rc == 0 && g->lame_duck_timer.reserved); /* reserved at create */
        (void)rc;
        run_hooks(srv, UG_GATE_LAME_DUCK);
        return;
    }
    gate_close(lp0, atomic_load(&g->timeout_ms));
}

int ug_server_shutdown(ug_server *srv, const ug_shutdown_opts *opts) {
    if (!srv) return -EINVAL;
    ug__gate *g = &srv->gate;
    if (atomic_load(&g->state) == UG_GATE_CLOSED) return -ESHUTDOWN;
    int want = (opts && opts->immediate) ? UG_SD_IMMEDIATE : UG_SD_GRACEFUL;
    int unclaimed = 0;
    if (atomic_compare_exchange_strong(&g->opts_claimed, &unclaimed, 1)) {
        uint32_t timeout =
            opts && opts->drain_timeout_ms ? opts->drain_timeout_ms : DEFAULT_DRAIN_TIMEOUT_MS;
        atomic_store(&g->delay_ms, opts ? opts->drain_delay_ms : 0);
        atomic_store(&g->timeout_ms, timeout);
        atomic_store(&g->handoff, opts && opts->handoff);
        atomic_store_explicit(&g->opts_ready, 1, memory_order_release);
    }
    int cur = atomic_load(&g->req);
    while (cur < want && !atomic_compare_exchange_weak(&g->req, &cur, want)) {
    }
    atomic_thread_fence(memory_order_seq_cst); /* req stored, then state loaded: gate_close */
    if (want == UG_SD_IMMEDIATE && ug__gate_state(srv) >= UG_GATE_DRAINING) {
        /* Past the close point only the forcing is left to decide, and loop 0, which reads
         * req, may already have ended: publish it here, for every loop. */
        int none = UG_FORCE_NONE;
        atomic_compare_exchange_strong(&g->forcing, &none, UG_FORCE_IMMEDIATE);
        ug__gate_wake_all(srv);
        return 0;
    }
    ug__loop_wake(loop0(srv)); /* an eventfd write: async-signal-safe */
    return 0;
}

ug_gate_state ug_server_state(const ug_server *srv) {
    return (ug_gate_state)atomic_load_explicit(&srv->gate.state, memory_order_acquire);
}

/* ---------------------------------------------------------------- every loop ---- */

/* The holds are the server's: once forcing, the first loop to get here drops them all and
 * closes the count to new ones in the same exchange, so that a hold taken concurrently is
 * either dropped with the others or refused, never left outstanding. Only that loop sees a
 * non-zero count, so only it writes holds_forced (read after the joins). */
static void drop_holds(ug__loop *lp) {
    ug_server *srv = lp->srv;
    ug__gate *g = &srv->gate;
    /* Under the labels' mutex: a labelled hold is counted and labelled in one step. */
    ug__hold_label dropped[UG_HOLD_LABELS_MAX]; /* logged after the unlock: the log sink may
                                                   take a hold itself */
    unsigned ndropped = 0;
    pthread_mutex_lock(&g->labels_mu);
    uint32_t h = atomic_exchange(&g->holds, UG_HOLDS_DROPPED) & ~UG_HOLDS_DROPPED;
    uint32_t labelled = 0;
    for (unsigned i = 0; i < UG_HOLD_LABELS_MAX; i++) {
        ug__hold_label *l = &g->labels[i];
        if (!l->count) continue;
        dropped[ndropped++] = *l;
        labelled += l->count;
        l->count = 0;
    }
    pthread_mutex_unlock(&g->labels_mu);
    for (unsigned i = 0; i < ndropped; i++)
        ug__log(srv, UG_LOG_WARN, "drain deadline: dropped hold \"%s\" (%u outstanding)",
                dropped[i].name, dropped[i].count);
    if (h > labelled)
        ug__log(srv, UG_LOG_WARN, "drain deadline: dropped %u unlabelled hold(s)", h - labelled);
    if (h) {
        UG_GAUGE_ADD(srv->report.holds_forced, h);
        lp->forced = 1;
        ug__gate_wake_all(srv); /* loops waiting only for the holds may end */
    }
}

/* At most this many forced-request lines per loop, then one line with the rest's count: the
 * answer to "what was the drain waiting for" without a log the size of the connection table. */
#define FORCED_LOG_MAX 1000u
#define FORCED_TARGET_MAX 256

/* One line per request the force ends: what it was, how old, where. */
static void log_forced(ug__loop *lp, ug__conn *c, const char *cause, uint32_t *n) {
    struct ug_request *r = c->ctx;
    if (!ug__request_live(r)) return;
    if ((*n)++ >= FORCED_LOG_MAX) return;
    ug_str m = ug_req_method(r), t = ug_req_target(r);
    ug__log(
        lp->srv, UG_LOG_WARN, "%s: forced %.*s %.*s%s, %llu ms old, %s, connection %u of loop %u",
        cause, (int)m.len, m.ptr ? m.ptr : "",
        (int)(t.len > FORCED_TARGET_MAX ? FORCED_TARGET_MAX : t.len), t.ptr ? t.ptr : "",
        t.len > FORCED_TARGET_MAX ? "..." : "", (unsigned long long)(lp->now_ms - r->t_dispatch_ms),
        r->rstate == UG_RS_STREAMING ? "streaming" : "deferred", ug__conn_idx(lp, c), lp->index);
}

void ug__gate_force_loop(ug__loop *lp, ug_cancel_reason why) {
    lp->phase = UG_LOOP_FORCED;
    lp->forced = 1;
    const char *cause = why == UG_CANCEL_SERVER_ERROR                     ? "server error"
                        : ug__gate_forcing(lp->srv) == UG_FORCE_IMMEDIATE ? "immediate shutdown"
                                                                          : "drain deadline";
    uint32_t logged = 0;
    for (uint32_t i = 0; i < lp->slots_used; i++) {
        ug__conn *c = &lp->slots[i];
        if (c->state == UG_CONN_OPEN || c->state == UG_CONN_LINGER) {
            log_forced(lp, c, cause, &logged);
            ug__conn_abort(lp, c, why);
        }
    }
    if (logged > FORCED_LOG_MAX)
        ug__log(lp->srv, UG_LOG_WARN, "%s: %u more forced request(s) on loop %u", cause,
                logged - FORCED_LOG_MAX, lp->index);
    drop_holds(lp); /* after the aborts: a cancel callback may have taken a hold */
}

/* This loop follows the close: its connections drain against its own deadline timer. */
static void enter_draining(ug__loop *lp) {
    ug_server *srv = lp->srv;
    lp->phase = UG_LOOP_DRAINING;
    for (uint32_t i = 0; i < lp->slots_used; i++)
        if (lp->slots[i].state != UG_CONN_FREE) ug__conn_drain(lp, &lp->slots[i]);
    if (ug__gate_forcing(srv) == UG_FORCE_IMMEDIATE) return; /* forced right after */
    uint64_t deadline_ns = atomic_load_explicit(&srv->gate.deadline_ns, memory_order_relaxed);
    if (lp->be_ops->timer(lp->be, deadline_ns, UG_UD(UG_OP_DEADLINE, 0, 0)) == 0) return;
    /* The loop's own timer bounds the drain instead (its slot is reserved). */
    ug__log(srv, UG_LOG_WARN, "drain deadline timer refused: using the loop timer");
    uint64_t deadline_ms = deadline_ns / 1000000u;
    int rc = ug__timer_start(&lp->timers, &lp->deadline_fallback, deadline_ms);
    assert(rc == 0 && lp->deadline_fallback.reserved);
    (void)rc;
}

void ug__gate_turn(ug__loop *lp) {
    ug_server *srv = lp->srv;
    if (lp->index == 0) check_shutdown(lp);
    if (lp->phase == UG_LOOP_RUNNING &&
        atomic_load_explicit(&srv->gate.state, memory_order_acquire) >= UG_GATE_DRAINING)
        enter_draining(lp);
    int forcing = ug__gate_forcing(srv);
    if (forcing && lp->phase != UG_LOOP_FORCED) {
        /* At the deadline a loop with nothing open has no connection to force. */
        if (forcing == UG_FORCE_IMMEDIATE || lp->conns_open) {
            ug__gate_force_loop(lp, UG_CANCEL_DEADLINE);
        } else {
            lp->phase = UG_LOOP_FORCED;
            drop_holds(lp);
        }
    }
}

int ug__gate_done(const ug__loop *lp) {
    const ug_server *srv = lp->srv;
    /* Loop 0 acts on every shutdown request before it ends (see gate_close). */
    if (lp->index == 0 && atomic_load(&srv->gate.req) > srv->gate.seen_req) return 0;
    return lp->phase != UG_LOOP_RUNNING && lp->conns_open == 0 &&
           atomic_load_explicit(&srv->listener.closed, memory_order_acquire) &&
           (atomic_load_explicit(&srv->gate.holds, memory_order_acquire) & ~UG_HOLDS_DROPPED) ==
               0 &&
           atomic_load_explicit(&lp->inbox.head, memory_order_relaxed) ==
               atomic_load_explicit(&lp->inbox.tail, memory_order_acquire);
}

void ug__gate_on_deadline(ug__loop *lp, const ug__completion *cq) {
    ug_server *srv = lp->srv;
    if (cq && cq->res == -ECANCELED) return;
    /* Every loop's timer is set to the one deadline; the first to fire publishes it. Nothing
     * is served after it, on any loop: connections still handed over are closed as they
     * arrive, and loops that are not waiting for it (their timer is later in firing) force
     * on their next turn. */
    int none = UG_FORCE_NONE;
    if (atomic_compare_exchange_strong(&srv->gate.forcing, &none, UG_FORCE_DEADLINE))
        ug__gate_wake_all(srv);
    if (lp->phase == UG_LOOP_FORCED) return;
    uint32_t holds = atomic_load(&srv->gate.holds) & ~UG_HOLDS_DROPPED;
    if (lp->conns_open || holds) {
        ug__log(srv, UG_LOG_WARN, "drain deadline: loop %u forcing %u connection(s)%s", lp->index,
                lp->conns_open, holds ? ", dropping the holds" : "");
        ug__gate_force_loop(lp, UG_CANCEL_DEADLINE);
    } else {
        lp->phase = UG_LOOP_FORCED;
        drop_holds(lp);
    }
}

/* A loop whose backend failed ends everything it holds; the server stops with it (loop 0
 * closes the gate as for an immediate shutdown; if loop 0 is the one, it closes the listener
 * at once). */
void ug__gate_loop_failed(ug__loop *lp) {
    ug_server *srv = lp->srv;
    /* Loop 0 hands it nothing more; what it was handed and never took is closed after the
     * joins (ug_server_run). */
    atomic_store_explicit(&lp->ended, 1, memory_order_release);
    atomic_store(&srv->gate.forcing, UG_FORCE_IMMEDIATE);
    if (lp->index == 0) {
        if (ug__gate_state(srv) < UG_GATE_DRAINING) set_state(srv, UG_GATE_DRAINING);
        ug__listener_fail(lp);
    } else {
        ug_shutdown_opts now = {.immediate = 1};
        ug_server_shutdown(srv, &now);
    }
    ug__gate_force_loop(lp, UG_CANCEL_SERVER_ERROR);
    ug__gate_wake_all(srv);
}

/* ---------------------------------------------------------------- holds ---- */

/* The count and the DROPPED bit are one word: a hold is taken only while the bit is clear,
 * so none survives the drop (see drop_holds). */
int ug_server_hold(ug_server *srv) {
    if (ug__gate_state(srv) == UG_GATE_CLOSED || ug__gate_forcing(srv)) return -ESHUTDOWN;
    uint32_t cur = atomic_load(&srv->gate.holds);
    do {
        if (cur & UG_HOLDS_DROPPED) return -ESHUTDOWN;
        if ((cur & ~UG_HOLDS_DROPPED) == ~UG_HOLDS_DROPPED) return -EOVERFLOW;
    } while (!atomic_compare_exchange_weak(&srv->gate.holds, &cur, cur + 1));
    return 0;
}

int ug_server_release(ug_server *srv) {
    uint32_t cur = atomic_load(&srv->gate.holds);
    do {
        if (!(cur & ~UG_HOLDS_DROPPED)) return -EINVAL;
    } while (!atomic_compare_exchange_weak(&srv->gate.holds, &cur, cur - 1));
    if (cur == 1) ug__gate_wake_all(srv); /* the last one: loops waiting for it may end */
    return 0;
}

static ug__hold_label *find_label(ug__gate *g, const char *name) {
    for (unsigned i = 0; i < UG_HOLD_LABELS_MAX; i++)
        if (g->labels[i].count && !strncmp(g->labels[i].name, name, UG_HOLD_LABEL_MAX))
            return &g->labels[i];
    return NULL;
}

int ug_server_hold_label(ug_server *srv, const char *label) {
    if (!srv || !label || !*label) return -EINVAL;
    ug__gate *g = &srv->gate;
    pthread_mutex_lock(&g->labels_mu);
    ug__hold_label *l = find_label(g, label);
    for (unsigned i = 0; !l && i < UG_HOLD_LABELS_MAX; i++)
        if (!g->labels[i].count) l = &g->labels[i];
    int rc = l ? ug_server_hold(srv) : -ENOSPC;
    if (rc == 0) {
        if (!l->count) snprintf(l->name, sizeof l->name, "%s", label);
        l->count++;
    }
    pthread_mutex_unlock(&g->labels_mu);
    return rc;
}

int ug_server_release_label(ug_server *srv, const char *label) {
    if (!srv || !label) return -EINVAL;
    ug__gate *g = &srv->gate;
    pthread_mutex_lock(&g->labels_mu);
    ug__hold_label *l = find_label(g, label);
    int rc = l ? ug_server_release(srv) : -EINVAL;
    if (rc == 0) l->count--;
    pthread_mutex_unlock(&g->labels_mu);
    return rc;
}
