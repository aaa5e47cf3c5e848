/* Server lifecycle, the event loop, the accept gate and shutdown.
 *
 * The gate: connections enter through one multishot accept. Closing the gate is one
 * transition made once by the loop thread: cancel the accept, serve every connection whose
 * accept completion arrives before the cancel's final completion (they were accepted before
 * the close point), then take what already completed its handshake from the kernel's accept
 * queue with non-blocking accept4() until EAGAIN (with DEFER_TASKRUN those accepts may never
 * have run), then close the listener at once so later clients are refused immediately.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DRAIN_TIMEOUT_MS 30000u
#define ACCEPT_RETRY_MS 100u
/* Slots beyond max_conns: accept completions already posted when the gate pauses still get
 * a slot (they are live connections and must be served). */
#define SLOT_HEADROOM 4096u

/* ---------------------------------------------------------------- config ---- */

void ug_config_init(ug_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 8080;
    cfg->backlog = 4096;
    cfg->listen_fd = -1;
    cfg->backend = UG_BACKEND_AUTO;
    cfg->max_conns = 16384;
    cfg->max_header_bytes = 8192;
    cfg->max_headers = 64;
    cfg->max_uri_bytes = 4096;
    cfg->max_body_bytes = 1u << 20;
    cfg->max_output_bytes = 256u << 10;
    cfg->idle_timeout_ms = 60000;
    cfg->read_header_timeout_ms = 10000;
    cfg->body_timeout_ms = 30000;
    cfg->write_timeout_ms = 30000;
    cfg->handler_timeout_ms = 30000;
    cfg->max_inflight = 8192;
    cfg->linger_ms = 1000;
    cfg->gate_settle_ms = 1;
    cfg->ring_entries = 1024;
    cfg->recv_buffers = 1024;
    cfg->recv_buffer_size = 4096;
    cfg->server_name = "ugate";
}

void ug__log(ug_server *srv, ug_log_level lvl, const char *fmt, ...) {
    if (!srv->cfg.log && lvl > UG_LOG_WARN) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (srv->cfg.log)
        srv->cfg.log(srv->cfg.log_user, lvl, msg);
    else
        fprintf(stderr, "ugate: %s\n", msg);
}

/* ---------------------------------------------------------------- time ---- */

static void update_time(ug_server *srv) {
    struct timespec ts;
    srv->now_ns = ug__clock_ns();
    srv->now_ms = srv->now_ns / 1000000u;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != srv->date_sec) ug__date_refresh(srv, ts.tv_sec);
}

/* ---------------------------------------------------------------- timeout queues ---- */

static void tq_unlink(ug_server *srv, ug__conn *c) {
    if (c->tq == UG_TQ_NONE) return;
    if (c->tq_prev != UG_NONE)
        srv->slots[c->tq_prev].tq_next = c->tq_next;
    else
        srv->tq[c->tq].head = c->tq_next;
    if (c->tq_next != UG_NONE)
        srv->slots[c->tq_next].tq_prev = c->tq_prev;
    else
        srv->tq[c->tq].tail = c->tq_prev;
    c->tq = UG_TQ_NONE;
    c->tq_prev = c->tq_next = UG_NONE;
}

static void tq_append(ug_server *srv, ug__conn *c, enum ug__tq q) {
    uint32_t idx = (uint32_t)(c - srv->slots);
    c->tq = (uint8_t)q;
    c->deadline_ms = srv->now_ms + srv->tq[q].timeout_ms;
    c->tq_next = UG_NONE;
    c->tq_prev = srv->tq[q].tail;
    if (c->tq_prev != UG_NONE)
        srv->slots[c->tq_prev].tq_next = idx;
    else
        srv->tq[q].head = idx;
    srv->tq[q].tail = idx;
}

void ug__tq_set(ug_server *srv, ug__conn *c, enum ug__tq q) {
    if (c->tq == q) return;
    tq_unlink(srv, c);
    if (q != UG_TQ_NONE && srv->tq[q].timeout_ms) tq_append(srv, c, q);
}

void ug__tq_touch(ug_server *srv, ug__conn *c) {
    enum ug__tq q = (enum ug__tq)c->tq;
    if (q == UG_TQ_NONE) return;
    tq_unlink(srv, c);
    tq_append(srv, c, q);
}

static void tq_expire(ug_server *srv) {
    for (int q = UG_TQ_NONE + 1; q < UG_TQ_COUNT; q++) {
        while (srv->tq[q].head != UG_NONE) {
            ug__conn *c = &srv->slots[srv->tq[q].head];
            if (c->deadline_ms > srv->now_ms) break;
            tq_unlink(srv, c);
            ug__conn_timeout(srv, c, (enum ug__tq)q);
        }
    }
}

static uint64_t next_deadline(const ug_server *srv) {
    uint64_t d = ug__timer_next(&srv->timers);
    for (int q = UG_TQ_NONE + 1; q < UG_TQ_COUNT; q++)
        if (srv->tq[q].head != UG_NONE && srv->slots[srv->tq[q].head].deadline_ms < d)
            d = srv->slots[srv->tq[q].head].deadline_ms;
    return d;
}

/* ---------------------------------------------------------------- dirty list ---- */

void ug__mark_dirty(ug_server *srv, ug__conn *c) {
    if (c->flags & UG_CF_DIRTY) return;
    c->flags |= UG_CF_DIRTY;
    c->dirty_next = srv->dirty_head;
    srv->dirty_head = (uint32_t)(c - srv->slots);
}

/* Parse and answer what arrived in this batch, then queue the sends: the responses to one
 * read's worth of pipelined requests leave in one send, and the next wait() submits every
 * connection's send in one io_uring_enter. */
static void flush_dirty(ug_server *srv) {
    while (srv->dirty_head != UG_NONE) {
        ug__conn *c = &srv->slots[srv->dirty_head];
        srv->dirty_head = c->dirty_next;
        c->flags &= (uint16_t)~UG_CF_DIRTY;
        c->dirty_next = UG_NONE;
        ug__conn_flush(srv, c);
    }
}

/* ---------------------------------------------------------------- core timers ---- */

/* The gate's own timers (accept retry, lame duck, settle, deadline fallback) have heap slots
 * reserved at create: what shutdown needs cannot fail for lack of memory. */
static void core_timer(ug_server *srv, ug__timer *t, uint64_t deadline_ms) {
    int rc = ug__timer_start(&srv->timers, t, deadline_ms);
    assert(rc == 0 && t->reserved);
    (void)rc;
}

/* ---------------------------------------------------------------- gate ---- */

static void set_gate(ug_server *srv, ug_gate_state st) {
    atomic_store_explicit(&srv->gate, (int)st, memory_order_release);
}

static int gate(const ug_server *srv) {
    return atomic_load_explicit(&srv->gate, memory_order_relaxed);
}

static int arm_accept(ug_server *srv) {
    int rc = srv->be_ops->accept(srv->be, srv->lfd, UG_UD(UG_OP_ACCEPT, 0, 0));
    if (rc == 0) srv->accept_armed = 1;
    return rc;
}

static void accept_retry_fired(ug__timer *t, void *arg) {
    (void)t;
    ug_server *srv = arg;
    if (srv->lfd >= 0 && !srv->accept_armed && !srv->accept_paused &&
        gate(srv) < UG_GATE_DRAINING && arm_accept(srv))
        ug__log(srv, UG_LOG_ERROR, "cannot re-arm accept");
}

/* Take every connection that completed its handshake and waits in the kernel's queue. */
static void drain_accept_queue(ug_server *srv) {
    for (;;) {
        int fd = ug__sock_accept_nb(srv->lfd);
        if (fd < 0) {
            if (fd != -EAGAIN) ug__log(srv, UG_LOG_WARN, "accept while closing: %s", strerror(-fd));
            return;
        }
        srv->report.accepted_at_close++;
        ug__conn_accepted(srv, fd);
    }
}

static void listener_close_now(ug_server *srv) {
    drain_accept_queue(srv);
    close(srv->lfd);
    srv->lfd = -1;
    srv->listener_settling = 0;
    srv->t_listener_closed_ms = srv->now_ms;
    srv->report.close_us = (srv->now_ms - srv->t_close_ms) * 1000u;
    ug__log(srv, UG_LOG_INFO,
            "listener closed %llu ms after the gate: %llu connection(s) taken while closing, "
            "%u open",
            (unsigned long long)(srv->now_ms - srv->t_close_ms),
            (unsigned long long)srv->report.accepted_at_close, srv->conns_open);
}

static void settle_over(ug__timer *t, void *arg) {
    (void)t;
    listener_close_now(arg);
}

/* The multishot accept has delivered its final completion: nothing more comes from it.
 * Closing the listener resets every connection still in its accept queue, including ones
 * whose handshake completes between our last accept4() and close(). So: first stop new
 * handshakes (drop bare SYNs), take what is queued, give handshakes already under way
 * gate_settle_ms to finish (loopback and LAN need far less than a millisecond), take those
 * too, then close. Clients arriving after the close are refused at once; the few whose SYN
 * lands inside the settle window are refused at their SYN retransmission instead. */
static void listener_close(ug_server *srv) {
    if (srv->lfd < 0 || srv->listener_settling) return;
    int rc = ug__sock_drop_syn(srv->lfd);
    if (rc < 0)
        ug__log(srv, UG_LOG_WARN, "cannot filter SYNs on the listener (%s): closing at once",
                strerror(-rc));
    if (rc < 0 || !srv->cfg.gate_settle_ms) {
        listener_close_now(srv);
        return;
    }
    drain_accept_queue(srv);
    srv->listener_settling = 1;
    core_timer(srv, &srv->settle_timer, srv->now_ms + srv->cfg.gate_settle_ms);
}

/* Backpressure through the gate: at max_conns the multishot accept is cancelled, so new
 * clients wait in the kernel's backlog (their handshake is answered by the kernel; they are
 * just not accepted yet) instead of being accepted and dropped. Accept completions already
 * posted still arrive and are served (the slot array has headroom for them). Below the low
 * watermark the accept is re-armed. */
void ug__gate_check_limit(ug_server *srv) {
    uint32_t max = srv->cfg.max_conns;
    if (gate(srv) >= UG_GATE_DRAINING || srv->lfd < 0) return;
    if (!srv->accept_paused) {
        /* No room to cancel: tried again at the next accept or close. */
        if (srv->conns_open >= max && srv->accept_armed &&
            srv->be_ops->cancel(srv->be, UG_UD(UG_OP_ACCEPT, 0, 0)) == 0) {
            srv->accept_paused = 1;
            srv->stats.accept_pauses++;
        }
        return;
    }
    uint32_t low = max - (max / 16 ? max / 16 : 1);
    if (srv->conns_open <= low && !srv->accept_armed) {
        srv->accept_paused = 0;
        srv->stats.accept_resumes++;
        if (arm_accept(srv))
            core_timer(srv, &srv->accept_retry, srv->now_ms + ACCEPT_RETRY_MS);
    }
}

static void on_accept(ug_server *srv, const ug__completion *cq) {
    if (!(cq->flags & UG__CF_MORE)) srv->accept_armed = 0;
    if (cq->res >= 0) {
        if (srv->lfd < 0) { /* impossible by construction: the listener closes after the */
            assert(!"accepted after close"); /* accept's final completion */
            srv->report.accepted_after_close++;
        }
        if (srv->accept_cancelled) srv->report.accepted_at_close++;
        ug__conn_accepted(srv, cq->res);
    } else if (cq->res != -ECANCELED) {
        srv->stats.accept_errors++;
        ug__log(srv, UG_LOG_WARN, "accept: %s", strerror(-cq->res));
    }
    if (srv->accept_armed) return;
    if (srv->accept_cancelled) {
        listener_close(srv);
        return;
    }
    if (srv->accept_paused) { /* the pause's cancel completed; resume may already be due */
        ug__gate_check_limit(srv);
        return;
    }
    /* A multishot accept ended without being cancelled (CQ overflow, an error): a server that
     * silently stops accepting looks healthy and serves no one. Re-arm; after resource
     * errors (EMFILE, ENFILE, ENOMEM, ENOBUFS) wait a little instead of spinning. */
    srv->stats.accept_rearms++;
    if (cq->res == -EMFILE || cq->res == -ENFILE || cq->res == -ENOMEM || cq->res == -ENOBUFS) {
        core_timer(srv, &srv->accept_retry, srv->now_ms + ACCEPT_RETRY_MS);
        return;
    }
    if (arm_accept(srv)) {
        ug__log(srv, UG_LOG_ERROR, "cannot re-arm accept; retrying");
        core_timer(srv, &srv->accept_retry, srv->now_ms + ACCEPT_RETRY_MS);
    }
}

static void run_hooks(ug_server *srv, ug_gate_state st) {
    for (size_t i = 0; i < srv->nhooks; i++) srv->hooks[i].fn(srv, st, srv->hooks[i].user);
}

static void force_all(ug_server *srv) {
    srv->forced = 1;
    for (uint32_t i = 0; i < srv->slots_used; i++) {
        ug__conn *c = &srv->slots[i];
        if (c->state == UG_CONN_OPEN || c->state == UG_CONN_LINGER)
            ug__conn_abort(srv, c, UG_CANCEL_DEADLINE);
    }
    /* After the aborts: a cancel callback may have taken a hold (refused from now on). */
    if (srv->holds) {
        srv->report.holds_forced += srv->holds;
        srv->holds = 0;
    }
}

/* OPEN/LAME_DUCK → DRAINING, once. */
static void gate_close(ug_server *srv, uint32_t timeout_ms) {
    if (gate(srv) >= UG_GATE_DRAINING) return;
    if (gate(srv) == UG_GATE_LAME_DUCK)
        srv->report.lame_duck_us = (srv->now_ms - srv->t_lame_duck_ms) * 1000u;
    ug__timer_stop(&srv->timers, &srv->lame_duck_timer);
    ug__timer_stop(&srv->timers, &srv->accept_retry);
    set_gate(srv, UG_GATE_DRAINING);
    srv->t_close_ms = srv->now_ms;
    srv->report.conns_at_close = srv->conns_open;
    ug__log(srv, UG_LOG_INFO, "gate closing: %u connection(s) open, deadline %u ms",
            srv->conns_open, timeout_ms);
    if (srv->accept_armed) {
        srv->accept_cancelled = 1;
        srv->accept_cancel_retry = srv->be_ops->cancel(srv->be, UG_UD(UG_OP_ACCEPT, 0, 0)) != 0;
    } else {
        listener_close(srv);
    }
    for (uint32_t i = 0; i < srv->slots_used; i++)
        if (srv->slots[i].state != UG_CONN_FREE) ug__conn_drain(srv, &srv->slots[i]);
    run_hooks(srv, UG_GATE_DRAINING);
    if (timeout_ms == 0) {
        force_all(srv);
        return;
    }
    if (srv->be_ops->timer(srv->be, srv->now_ns + (uint64_t)timeout_ms * 1000000u,
                           UG_UD(UG_OP_DEADLINE, 0, 0)) == 0) {
        srv->deadline_armed = 1;
    } else { /* the loop's own timer bounds the drain instead */
        ug__log(srv, UG_LOG_WARN, "drain deadline timer refused: using the loop timer");
        core_timer(srv, &srv->deadline_fallback, srv->now_ms + timeout_ms);
    }
}

static void lame_duck_over(ug__timer *t, void *arg) {
    (void)t;
    ug_server *srv = arg;
    gate_close(srv, atomic_load(&srv->sd_timeout_ms));
}

static void deadline_reached(ug_server *srv) {
    if (srv->conns_open || srv->holds) {
        ug__log(srv, UG_LOG_WARN,
                "drain deadline: forcing %u connection(s) closed, dropping %u hold(s)",
                srv->conns_open, srv->holds);
        force_all(srv);
    }
}

static void on_deadline(ug_server *srv, const ug__completion *cq) {
    srv->deadline_armed = 0;
    if (cq->res != -ECANCELED) deadline_reached(srv);
}

static void deadline_fallback_fired(ug__timer *t, void *arg) {
    (void)t;
    deadline_reached(arg);
}

/* Apply shutdown requests stored by ug_server_shutdown (any thread, or a signal handler). */
static void check_shutdown(ug_server *srv) {
    int req = atomic_load_explicit(&srv->shutdown_req, memory_order_acquire);
    if (req <= srv->shutdown_seen) return;
    if (!atomic_load_explicit(&srv->sd_opts_ready, memory_order_acquire)) return;
    int first = srv->shutdown_seen == 0;
    srv->shutdown_seen = req;
    uint32_t timeout = atomic_load(&srv->sd_timeout_ms);
    if (req == 2) {
        if (gate(srv) < UG_GATE_DRAINING)
            gate_close(srv, 0);
        else
            force_all(srv);
        return;
    }
    if (!first) return;
    uint32_t delay = atomic_load(&srv->sd_delay_ms);
    if (delay) {
        ug__log(srv, UG_LOG_INFO, "lame duck for %u ms: %u connection(s) open", delay,
                srv->conns_open);
        set_gate(srv, UG_GATE_LAME_DUCK);
        srv->t_lame_duck_ms = srv->now_ms;
        core_timer(srv, &srv->lame_duck_timer, srv->now_ms + delay);
        run_hooks(srv, UG_GATE_LAME_DUCK);
        return;
    }
    gate_close(srv, timeout);
}

int ug_server_shutdown(ug_server *srv, const ug_shutdown_opts *opts) {
    if (!srv) return -EINVAL;
    if (atomic_load(&srv->gate) == UG_GATE_CLOSED) return -ESHUTDOWN;
    int want = (opts && opts->immediate) ? 2 : 1;
    int unclaimed = 0;
    if (atomic_compare_exchange_strong(&srv->sd_opts_claimed, &unclaimed, 1)) {
        uint32_t timeout =
            opts && opts->drain_timeout_ms ? opts->drain_timeout_ms : DEFAULT_DRAIN_TIMEOUT_MS;
        atomic_store(&srv->sd_delay_ms, opts ? opts->drain_delay_ms : 0);
        atomic_store(&srv->sd_timeout_ms, timeout);
        atomic_store_explicit(&srv->sd_opts_ready, 1, memory_order_release);
    }
    int cur = atomic_load(&srv->shutdown_req);
    while (cur < want && !atomic_compare_exchange_weak(&srv->shutdown_req, &cur, want)) {
    }
    srv->be_ops->wake(srv->be);
    return 0;
}

ug_gate_state ug_server_state(const ug_server *srv) {
    return (ug_gate_state)atomic_load_explicit(&srv->gate, memory_order_acquire);
}

/* ---------------------------------------------------------------- posts ---- */

/* The run's end swaps this marker in: a post that loses the race to it is refused rather
 * than accepted and never run. */
#define POSTS_CLOSED ((ug__post *)(uintptr_t)1)

int ug_server_post(ug_server *srv, ug_post_fn fn, void *user) {
    if (!srv || !fn) return -EINVAL;
    ug__post *p = ug__malloc(sizeof *p);
    if (!p) return -ENOMEM;
    p->fn = fn;
    p->user = user;
    ug__post *cur = atomic_load_explicit(&srv->posts, memory_order_relaxed);
    do {
        if (cur == POSTS_CLOSED) {
            free(p);
            return -ESHUTDOWN;
        }
        p->next = cur;
    } while (!atomic_compare_exchange_weak_explicit(&srv->posts, &cur, p, memory_order_release,
                                                    memory_order_relaxed));
    srv->be_ops->wake(srv->be);
    return 0;
}

/* Run what was posted, in posting order. final: also close the stack to new posts. */
static void run_posts(ug_server *srv, int final) {
    if (!final && !atomic_load_explicit(&srv->posts, memory_order_relaxed)) return;
    ug__post *list =
        atomic_exchange_explicit(&srv->posts, final ? POSTS_CLOSED : NULL, memory_order_acquire);
    if (list == POSTS_CLOSED) return;
    ug__post *rev = NULL; /* the stack is newest first: run in posting order */
    while (list) {
        ug__post *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        ug__post *n = rev->next;
        rev->fn(srv, rev->user);
        free(rev);
        rev = n;
    }
}

/* ---------------------------------------------------------------- completions ---- */

static void on_completion(void *arg, const ug__completion *cq) {
    ug_server *srv = arg;
    /* The loop may have slept for long: deadlines set while handling this batch (a new
     * connection's header timeout, a body gap) must count from now, not from before the
     * wait. One clock read per batch. */
    if (srv->time_stale) {
        update_time(srv);
        srv->time_stale = 0;
    }
    unsigned op = UG_UD_OP(cq->ud);
    if (op == UG_OP_ACCEPT) {
        on_accept(srv, cq);
        return;
    }
    if (op == UG_OP_DEADLINE) {
        on_deadline(srv, cq);
        return;
    }
    uint32_t idx = UG_UD_IDX(cq->ud);
    ug__conn *c = idx < srv->slots_used ? &srv->slots[idx] : NULL;
    if (!c || c->gen != UG_UD_GEN(cq->ud) || c->state == UG_CONN_FREE) {
        /* Never expected: a slot is freed only after its last completion. */
        assert(!"stale completion");
        srv->stats.stale_completions++;
        ug__log(srv, UG_LOG_ERROR, "stale completion op=%u idx=%u res=%d", op, idx, cq->res);
        if (cq->flags & UG__CF_BUFFER) srv->be_ops->recv_release(srv->be, cq->buf_id);
        return;
    }
    if (op == UG_OP_RECV)
        ug__conn_on_recv(srv, c, cq);
    else if (op == UG_OP_SEND)
        ug__conn_on_send(srv, c, cq);
}

/* ---------------------------------------------------------------- run ---- */

static int drained(const ug_server *srv) {
    return gate(srv) == UG_GATE_DRAINING && srv->lfd < 0 && !srv->accept_armed &&
           srv->conns_open == 0 && srv->holds == 0;
}

int ug_server_run(ug_server *srv, ug_report *report) {
    if (!srv) return -EINVAL;
    if (srv->running) return -EBUSY;
    srv->running = 1;
    int rc = 0;
    update_time(srv);
    if (gate(srv) == UG_GATE_OPEN && arm_accept(srv)) {
        rc = -EIO;
        ug__log(srv, UG_LOG_ERROR, "cannot arm accept");
    }
    while (rc == 0) {
        update_time(srv);
        check_shutdown(srv);
        if (srv->accept_cancel_retry && srv->accept_armed) /* the SQ was full: try again */
            srv->accept_cancel_retry = srv->be_ops->cancel(srv->be, UG_UD(UG_OP_ACCEPT, 0, 0)) != 0;
        /* What the last batch received is parsed before any timeout is judged: a request
         * whose last bytes arrived with the batch is complete, not late. */
        flush_dirty(srv);
        run_posts(srv, 0);
        ug__timer_run(&srv->timers, srv->now_ms, srv);
        tq_expire(srv);
        flush_dirty(srv);
        if (drained(srv)) break;
        uint64_t next = next_deadline(srv);
        int64_t wait_ns = -1;
        if (next != UINT64_MAX)
            wait_ns = next <= srv->now_ms ? 0 : (int64_t)(next - srv->now_ms) * 1000000;
        if (srv->dirty_head != UG_NONE) wait_ns = 0;
        srv->time_stale = 1;
        int n = srv->be_ops->wait(srv->be, wait_ns, on_completion, srv);
        if (n < 0) {
            ug__log(srv, UG_LOG_ERROR, "backend wait: %s", strerror(-n));
            rc = n;
        }
    }
    if (rc < 0) { /* the loop failed: end everything, still deliver cancel callbacks */
        if (gate(srv) < UG_GATE_DRAINING) set_gate(srv, UG_GATE_DRAINING);
        force_all(srv);
        if (srv->lfd >= 0) {
            close(srv->lfd);
            srv->lfd = -1;
        }
    }
    update_time(srv);
    run_posts(srv, 1);
    if (srv->deadline_armed) srv->be_ops->timer_cancel(srv->be, UG_UD(UG_OP_DEADLINE, 0, 0));
    srv->t_drained_ms = srv->now_ms;
    if (srv->t_close_ms) srv->report.drain_us = (srv->now_ms - srv->t_close_ms) * 1000u;
    set_gate(srv, UG_GATE_CLOSED);
    ug__log(srv, UG_LOG_INFO,
            "closed: %llu connection(s) and %llu request(s) drained, %llu connection(s) and "
            "%llu request(s) forced, in %llu ms",
            (unsigned long long)srv->report.conns_drained,
            (unsigned long long)srv->report.requests_drained,
            (unsigned long long)srv->report.conns_forced,
            (unsigned long long)srv->report.requests_forced,
            (unsigned long long)(srv->report.drain_us / 1000u));
    if (report) *report = srv->report;
    if (rc < 0) return rc;
    return srv->forced ? 1 : 0;
}

/* ---------------------------------------------------------------- create / free ---- */

/* Visible ASCII and inner spaces only, not empty: it goes into every response head as is
 * (RFC 9110 10.2.4: products and comments separated by whitespace). */
static int server_name_ok(const char *name) {
    if (!name) return 1;
    size_t n = strlen(name);
    if (n == 0 || n > UG_SERVER_NAME_MAX || name[0] == ' ' || name[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e) return 0;
    return 1;
}

static char *dup_or_null(const char *s) {
    return s ? ug__strdup(s) : NULL;
}

int ug_server_create(ug_server **out, const ug_config *cfg_in) {
    return ug__server_create_ops(out, cfg_in, NULL);
}

int ug__server_create_ops(ug_server **out, const ug_config *cfg_in, const ug__backend_ops *ops) {
    if (!out) return -EINVAL;
    *out = NULL;
    ug_config defaults, cfg;
    ug_config_init(&defaults);
    cfg = cfg_in ? *cfg_in : defaults;
#define DEF(f)                                                                                     \
    if (!cfg.f) cfg.f = defaults.f
    DEF(backlog);
    DEF(max_conns);
    DEF(max_header_bytes);
    DEF(max_headers);
    DEF(max_uri_bytes);
    DEF(max_body_bytes);
    DEF(max_output_bytes);
    DEF(max_inflight);
    DEF(ring_entries);
    DEF(recv_buffers);
    DEF(recv_buffer_size);
#undef DEF
    if (!cfg.host) cfg.host = defaults.host;
    if (cfg.max_header_bytes > 65536 || cfg.max_uri_bytes > cfg.max_header_bytes ||
        cfg.max_conns > UG_IDX_MAX - SLOT_HEADROOM || cfg.max_body_bytes > (1ull << 30) ||
        cfg.max_headers > 4096 || cfg.recv_buffers > 32768 || cfg.recv_buffer_size > (1u << 20) ||
        cfg.max_output_bytes > (1u << 30) || !server_name_ok(cfg.server_name))
        return -EINVAL;

    ug_server *srv = ug__calloc(1, sizeof *srv);
    if (!srv) return -ENOMEM;
    srv->cfg = cfg;
    srv->lfd = -1;
    srv->free_head = UG_NONE;
    srv->dirty_head = UG_NONE;
    srv->host_copy = ug__strdup(cfg.host);
    srv->server_name_copy = dup_or_null(cfg.server_name);
    srv->cfg.host = srv->host_copy;
    srv->cfg.server_name = srv->server_name_copy;
    srv->limits.max_header_bytes = cfg.max_header_bytes;
    srv->limits.max_headers = cfg.max_headers;
    srv->limits.max_uri_bytes = cfg.max_uri_bytes;
    srv->limits.max_body_bytes = cfg.max_body_bytes;
    for (int q = 0; q < UG_TQ_COUNT; q++) srv->tq[q].head = srv->tq[q].tail = UG_NONE;
    srv->tq[UG_TQ_IDLE].timeout_ms = cfg.idle_timeout_ms;
    srv->tq[UG_TQ_HEADER].timeout_ms = cfg.read_header_timeout_ms;
    srv->tq[UG_TQ_BODY].timeout_ms = cfg.body_timeout_ms;
    srv->tq[UG_TQ_WRITE].timeout_ms = cfg.write_timeout_ms;
    srv->tq[UG_TQ_HANDLER].timeout_ms = cfg.handler_timeout_ms;
    srv->tq[UG_TQ_LINGER].timeout_ms = cfg.linger_ms ? cfg.linger_ms : 1;
    atomic_init(&srv->gate, UG_GATE_OPEN);
    atomic_init(&srv->posts, NULL);
    int rc = -ENOMEM;
    if (!srv->host_copy || (cfg.server_name && !srv->server_name_copy)) goto fail;
    if (ug__timer_init_reserved(&srv->timers, &srv->accept_retry, accept_retry_fired) ||
        ug__timer_init_reserved(&srv->timers, &srv->lame_duck_timer, lame_duck_over) ||
        ug__timer_init_reserved(&srv->timers, &srv->settle_timer, settle_over) ||
        ug__timer_init_reserved(&srv->timers, &srv->deadline_fallback, deadline_fallback_fired))
        goto fail;
    ug__std_hdrs_init(srv);

    /* Slots are reserved address space: an untouched page costs nothing, so max_conns can
     * be generous while an idle server stays small. */
    srv->nslots = cfg.max_conns + SLOT_HEADROOM;
    void *m = mmap(NULL, (size_t)srv->nslots * sizeof(ug__conn), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) goto fail;
    srv->slots = m;

    ug__backend_params bp = {cfg.ring_entries, cfg.recv_buffers, cfg.recv_buffer_size};
    if (ops) {
        srv->be_ops = ops;
        rc = srv->be_ops->create(&srv->be, &bp);
    } else if (cfg.backend == UG_BACKEND_EPOLL) {
        srv->be_ops = &ug__backend_epoll;
        rc = srv->be_ops->create(&srv->be, &bp);
    } else {
        srv->be_ops = &ug__backend_uring;
        rc = srv->be_ops->create(&srv->be, &bp);
        if (rc && cfg.backend == UG_BACKEND_AUTO) {
            ug__log(srv, UG_LOG_WARN, "io_uring unavailable (%s): using epoll", strerror(-rc));
            srv->be_ops = &ug__backend_epoll;
            rc = srv->be_ops->create(&srv->be, &bp);
        }
    }
    if (rc) {
        srv->be = NULL;
        goto fail;
    }
    if (cfg.listen_fd >= 0) {
        srv->lfd = cfg.listen_fd;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(srv->lfd, (struct sockaddr *)&ss, &sl) == 0)
            srv->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        int fl = fcntl(srv->lfd, F_GETFL);
        if (fl < 0 || fcntl(srv->lfd, F_SETFL, fl | O_NONBLOCK) < 0) {
            rc = -errno;
            goto fail;
        }
    } else {
        rc = ug__listen(cfg.host, cfg.port, cfg.backlog, &srv->port);
        if (rc < 0) goto fail;
        srv->lfd = rc;
    }
    update_time(srv);
    *out = srv;
    return 0;
fail:
    /* A failed create leaves cfg.listen_fd to the caller, open, whatever failed. */
    if (cfg.listen_fd >= 0 && srv->lfd == cfg.listen_fd) srv->lfd = -1;
    ug_server_free(srv);
    return rc;
}

void ug_server_free(ug_server *srv) {
    if (!srv) return;
    /* Requests still waiting (the server never ran, or was freed without a drain): their
     * owners hear about it. */
    for (uint32_t i = 0; srv->slots && i < srv->slots_used; i++) {
        ug__conn *c = &srv->slots[i];
        if (c->state == UG_CONN_FREE) continue;
        if (c->ctx && c->ctx->cancel_fn &&
            (c->ctx->rstate == UG_RS_DEFERRED || c->ctx->rstate == UG_RS_STREAMING))
            c->ctx->cancel_fn(c->ctx, UG_CANCEL_SERVER_FREE, c->ctx->cancel_user);
        if (c->ctx) ug__ctx_put(srv, c->ctx);
        close(c->fd);
    }
    if (srv->be) srv->be_ops->destroy(srv->be);
    if (srv->lfd >= 0) close(srv->lfd);
    ug__post *p = atomic_exchange(&srv->posts, NULL);
    if (p == POSTS_CLOSED) p = NULL;
    while (p) {
        ug__post *n = p->next;
        free(p);
        p = n;
    }
    while (srv->ctx_free) {
        struct ug_request *ctx = srv->ctx_free;
        srv->ctx_free = ctx->free_next;
        ug__ctx_destroy(ctx);
    }
    if (srv->slots) munmap(srv->slots, (size_t)srv->nslots * sizeof(ug__conn));
    for (size_t i = 0; i < srv->nroutes; i++) {
        free(srv->routes[i].method);
        free(srv->routes[i].path);
    }
    free(srv->routes);
    free(srv->hooks);
    ug__timer_heap_free(&srv->timers);
    free(srv->host_copy);
    free(srv->server_name_copy);
    free(srv);
}

uint16_t ug_server_port(const ug_server *srv) {
    return srv->port;
}

const char *ug_server_backend(const ug_server *srv) {
    return srv->be_ops->name;
}

int ug_route(ug_server *srv, const char *method, const char *path, unsigned flags,
             ug_handler_fn handler, void *user) {
    if (!srv || !path || path[0] != '/' || !handler || (flags & ~UG_ROUTE_PREFIX)) return -EINVAL;
    if (srv->running) return -EBUSY;
    ug__route *r = ug__realloc(srv->routes, (srv->nroutes + 1) * sizeof *r);
    if (!r) return -ENOMEM;
    srv->routes = r;
    r = &srv->routes[srv->nroutes];
    r->method = dup_or_null(method);
    r->path = ug__strdup(path);
    if ((method && !r->method) || !r->path) {
        free(r->method);
        free(r->path);
        return -ENOMEM;
    }
    r->path_len = strlen(path);
    r->flags = flags;
    r->fn = handler;
    r->user = user;
    srv->nroutes++;
    return 0;
}

int ug_server_on_shutdown(ug_server *srv, ug_shutdown_hook_fn fn, void *user) {
    if (!srv || !fn) return -EINVAL;
    if (srv->running) return -EBUSY;
    ug__hook *h = ug__realloc(srv->hooks, (srv->nhooks + 1) * sizeof *h);
    if (!h) return -ENOMEM;
    srv->hooks = h;
    h[srv->nhooks].fn = fn;
    h[srv->nhooks].user = user;
    srv->nhooks++;
    return 0;
}

int ug_server_hold(ug_server *srv) {
    if (gate(srv) == UG_GATE_CLOSED || srv->forced) return -ESHUTDOWN;
    srv->holds++;
    return 0;
}

int ug_server_release(ug_server *srv) {
    if (!srv->holds) return -EINVAL;
    srv->holds--;
    return 0;
}

void ug_server_stats(const ug_server *srv, ug_stats *out) {
    *out = srv->stats;
    out->conns_open = srv->conns_open;
    out->inflight = srv->inflight;
}
