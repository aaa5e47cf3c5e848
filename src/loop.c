/* A loop: one thread, one backend, its own connections. The phases of a turn read top to
 * bottom in ug__loop_run: take the connections loop 0 handed over, act on the gate, parse
 * what the last batch received, run posted work, timers and timeouts, parse again, and wait
 * for the backend with a timeout set by the earliest deadline. */
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- create / destroy ---- */

static void deadline_fallback_fired(ug__timer *t, void *arg) {
    (void)t;
    ug__gate_on_deadline(arg, NULL);
}

int ug__loop_create(ug_server *srv, uint32_t index, const ug__backend_ops *ops, ug__loop **out) {
    const ug_config *cfg = &srv->cfg;
    *out = NULL;
    ug__loop *lp = ug__calloc(1, sizeof *lp);
    if (!lp) return -ENOMEM;
    lp->srv = srv;
    lp->index = index;
    lp->be_ops = ops;
    lp->limits = &srv->limits;
    lp->max_output_bytes = cfg->max_output_bytes;
    /* max_inflight is split between the loops: no shared counter on the request path. */
    lp->max_inflight = cfg->max_inflight == UG_UNLIMITED
                           ? UG_UNLIMITED
                           : (uint32_t)(((uint64_t)cfg->max_inflight + srv->nloops - 1) /
                                        srv->nloops); /* 64 bits: no wrap near 2^32 */
    lp->free_head = UG_NONE;
    lp->dirty_head = UG_NONE;
    for (int q = 0; q < UG_TQ_COUNT; q++) lp->tq[q].head = lp->tq[q].tail = UG_NONE;
    lp->tq[UG_TQ_IDLE].timeout_ms = cfg->idle_timeout_ms;
    lp->tq[UG_TQ_HEADER].timeout_ms = cfg->read_header_timeout_ms;
    lp->tq[UG_TQ_BODY].timeout_ms = cfg->body_timeout_ms;
    lp->tq[UG_TQ_WRITE].timeout_ms = cfg->write_timeout_ms;
    lp->tq[UG_TQ_HANDLER].timeout_ms = cfg->handler_timeout_ms;
    lp->tq[UG_TQ_LINGER].timeout_ms = cfg->linger_ms ? cfg->linger_ms : 1;
    atomic_init(&lp->posts, NULL);
    atomic_init(&lp->inbox.head, 0);
    atomic_init(&lp->inbox.tail, 0);
    int rc = -ENOMEM;
    if (ug__timer_init_reserved(&lp->timers, &lp->deadline_fallback, deadline_fallback_fired))
        goto fail;
    ug__std_hdrs_init(lp);

    /* Slots are reserved address space: an untouched page costs nothing, so max_conns can
     * be generous (and every loop able to hold them all) while an idle server stays small. */
    lp->nslots = ug__config_slots(cfg);
    void *m = mmap(NULL, (size_t)lp->nslots * sizeof(ug__conn), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) goto fail;
    lp->slots = m;

    ug__backend_params bp = {cfg->ring_entries, cfg->recv_buffers, cfg->recv_buffer_size};
    rc = ops->create(&lp->be, &bp);
    if (rc) {
        lp->be = NULL;
        goto fail;
    }
    *out = lp;
    return 0;
fail:
    ug__loop_destroy(lp);
    return rc;
}

/* How many completions a turn would like to wake up for; the backend's wait() bounds how
 * long it sleeps for them (UG__BATCH_WAIT_US). Only a loop that is busy asks for more than
 * one. It asks for at most the receives with data and the sends its last wait delivered, so
 * one active client among idle connections is answered at once: idle connections complete
 * nothing, and accepts, EOFs, cancels and timers are not traffic that comes again soon. And
 * for at most an eighth of its connections: with a request in flight on each, a busy loop
 * sees about one completion per connection per round trip, and waiting for an eighth leaves
 * most clients reading their responses while the loop sleeps. WAIT_BATCH_MAX caps the count.
 * A draining server takes every completion as it comes, so the drain's end is not delayed
 * for a batch. */
#define WAIT_BATCH_DIV 8u
#define WAIT_BATCH_MAX 32u

static uint32_t wait_batch(const ug__loop *lp) {
    if (ug__gate_state(lp->srv) >= UG_GATE_DRAINING) return 1;
    uint32_t n = ug__loop_conns(lp) / WAIT_BATCH_DIV;
    if (n > lp->wait_io) n = lp->wait_io;
    return n < 1 ? 1 : n > WAIT_BATCH_MAX ? WAIT_BATCH_MAX : n;
}

/* Run what was posted, in posting order. final: also close the stack to new posts. */
#define POSTS_CLOSED ((ug__post *)(uintptr_t)1)

static void free_posts(ug__post *p) {
    while (p && p != POSTS_CLOSED) {
        ug__post *n = p->next;
        free(p);
        p = n;
    }
}

/* Connections handed over and never taken: the loop failed, or never started. */
uint32_t ug__loop_close_inbox(ug__loop *lp) {
    uint32_t head = atomic_load(&lp->inbox.head), tail = atomic_load(&lp->inbox.tail), n = 0;
    for (; head != tail; head++, n++) {
        int fd = lp->inbox.fds[head % UG_INBOX_SIZE];
        if (lp->be)
            lp->be_ops->close(lp->be, fd);
        else
            close(fd);
    }
    atomic_store(&lp->inbox.head, tail);
    return n;
}

void ug__loop_destroy(ug__loop *lp) {
    if (!lp) return;
    /* Requests still waiting (the server never ran, or was freed without a drain): their
     * owners hear about it. */
    if (lp->slots) ug__conn_free_all(lp, UG_CANCEL_SERVER_FREE);
    ug__loop_close_inbox(lp);
    if (lp->be) lp->be_ops->destroy(lp->be);
    free_posts(atomic_exchange(&lp->posts, NULL));
    ug__ctx_free_all(lp);
    if (lp->slots) munmap(lp->slots, (size_t)lp->nslots * sizeof(ug__conn));
    ug__timer_heap_free(&lp->timers);
    free(lp);
}

/* ---------------------------------------------------------------- time ---- */

static void update_time(ug__loop *lp) {
    struct timespec ts;
    lp->now_ns = ug__clock_ns();
    lp->now_ms = lp->now_ns / 1000000u;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != lp->date_sec) ug__date_refresh(lp, ts.tv_sec);
}

/* ---------------------------------------------------------------- dirty list ---- */

void ug__mark_dirty(ug__loop *lp, ug__conn *c) {
    if (c->flags & UG_CF_DIRTY) return;
    c->flags |= UG_CF_DIRTY;
    c->dirty_next = lp->dirty_head;
    lp->dirty_head = ug__conn_idx(lp, c);
}

/* Parse and answer what arrived in this batch, then queue the sends: the responses to one
 * read's worth of pipelined requests leave in one send, and the next wait() submits every
 * connection's send in one kernel entry. */
static void flush_dirty(ug__loop *lp) {
    while (lp->dirty_head != UG_NONE) {
        ug__conn *c = &lp->slots[lp->dirty_head];
        lp->dirty_head = c->dirty_next;
        c->flags &= (uint16_t)~UG_CF_DIRTY;
        c->dirty_next = UG_NONE;
        ug__conn_flush(lp, c);
    }
}

/* ---------------------------------------------------------------- wake, posts, inbox ---- */

void ug__loop_wake(ug__loop *lp) {
    lp->be_ops->wake(lp->be);
}

int ug__loop_post(ug__loop *lp, ug_post_fn fn, void *user) {
    ug__post *p = ug__malloc(sizeof *p);
    if (!p) return -ENOMEM;
    p->fn = fn;
    p->user = user;
    ug__post *cur = atomic_load_explicit(&lp->posts, memory_order_relaxed);
    do {
        if (cur == POSTS_CLOSED) { /* the run's end swapped the marker in: refused, not lost */
            free(p);
            return -ESHUTDOWN;
        }
        p->next = cur;
    } while (!atomic_compare_exchange_weak_explicit(&lp->posts, &cur, p, memory_order_release,
                                                    memory_order_relaxed));
    ug__loop_wake(lp);
    return 0;
}

/* final: close the stack to new posts if it is empty, and say so (1); posts that are
 * waiting are run instead (0), and the caller looks again at whether the loop is done, since
 * they may have taken a hold or handed work to the loop. */
static int run_posts(ug__loop *lp, int final) {
    ug__post *list = atomic_load_explicit(&lp->posts, memory_order_relaxed);
    if (final && list == NULL) {
        ug__post *none = NULL;
        if (atomic_compare_exchange_strong_explicit(&lp->posts, &none, POSTS_CLOSED,
                                                    memory_order_acq_rel, memory_order_acquire))
            return 1;
        list = none;
    }
    if (!list || list == POSTS_CLOSED) return list == POSTS_CLOSED;
    list = atomic_exchange_explicit(&lp->posts, NULL, memory_order_acquire);
    ug__post *rev = NULL; /* the stack is newest first: run in posting order */
    while (list) {
        ug__post *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        ug__post *n = rev->next;
        rev->fn(lp->srv, rev->user);
        free(rev);
        rev = n;
    }
    return 0;
}

/* Loop 0 only (the single producer). The release store publishes the fd before the tail. */
int ug__loop_hand(ug__loop *lp, int fd) {
    uint32_t tail = atomic_load_explicit(&lp->inbox.tail, memory_order_relaxed);
    uint32_t head = atomic_load_explicit(&lp->inbox.head, memory_order_acquire);
    if (tail - head == UG_INBOX_SIZE) return -EAGAIN;
    lp->inbox.fds[tail % UG_INBOX_SIZE] = fd;
    atomic_store_explicit(&lp->inbox.tail, tail + 1, memory_order_release);
    lp->wake_pending = 1;
    return 0;
}

static void take_inbox(ug__loop *lp) {
    uint32_t head = atomic_load_explicit(&lp->inbox.head, memory_order_relaxed);
    uint32_t tail = atomic_load_explicit(&lp->inbox.tail, memory_order_acquire);
    if (head == tail) return;
    for (; head != tail; head++) {
        int fd = lp->inbox.fds[head % UG_INBOX_SIZE];
        /* Counted in conns_open before it leaves the inbox: loop 0 reads head (acquire) and
         * then conns_open, so the connection is in one count or the other, never in neither
         * (max_conns). */
        ug__conn_accepted(lp, fd);
        atomic_store_explicit(&lp->inbox.head, head + 1, memory_order_release);
    }
}

/* ---------------------------------------------------------------- completions ---- */

static void on_completion(void *arg, const ug__completion *cq) {
    ug__loop *lp = arg;
    /* The loop may have slept for long: deadlines set while handling this batch (a new
     * connection's header timeout, a body gap) must count from now, not from before the
     * wait. One clock read per batch. */
    if (lp->time_stale) {
        update_time(lp);
        lp->time_stale = 0;
    }
    unsigned op = UG_UD_OP(cq->ud);
    if (op == UG_OP_ACCEPT) {
        ug__listener_on_accept(lp, cq);
        return;
    }
    if (op == UG_OP_DEADLINE) {
        ug__gate_on_deadline(lp, cq);
        return;
    }
    uint32_t idx = UG_UD_IDX(cq->ud);
    ug__conn *c = idx < lp->slots_used ? &lp->slots[idx] : NULL;
    if (!c || c->gen != UG_UD_GEN(cq->ud) || c->state == UG_CONN_FREE) {
        /* Never expected: a slot is freed only after its last completion. */
        assert(!"stale completion");
        UG_STAT_INC(lp, stale_completions);
        ug__log(lp->srv, UG_LOG_ERROR, "stale completion op=%u idx=%u res=%d", op, idx, cq->res);
        if (cq->flags & UG__CF_BUFFER) lp->be_ops->recv_release(lp->be, cq->buf_id);
        return;
    }
    lp->wait_io += cq->res > 0;
    if (op == UG_OP_RECV)
        ug__conn_on_recv(lp, c, cq);
    else if (op == UG_OP_SEND)
        ug__conn_on_send(lp, c, cq);
}

/* ---------------------------------------------------------------- run ---- */

_Thread_local const ug_server *ug__loop_thread_server;

int ug__loop_run(ug__loop *lp) {
    int rc = 0;
    ug__loop_thread_server = lp->srv;
    atomic_store_explicit(&lp->started, 1, memory_order_release);
    update_time(lp);
    if (lp->index == 0 && (rc = ug__listener_start(lp)) < 0) {
        ug__log(lp->srv, UG_LOG_ERROR, "cannot arm the accept: %s", strerror(-rc));
        rc = -EIO;
    }
    while (rc == 0) {
        update_time(lp);
        take_inbox(lp);
        ug__gate_turn(lp);
        /* What the last batch received is parsed before any timeout is judged: a request
         * whose last bytes arrived with the batch is complete, not late. */
        flush_dirty(lp);
        run_posts(lp, 0);
        ug__timer_run(&lp->timers, lp->now_ms, lp);
        ug__tq_expire(lp);
        flush_dirty(lp);
        if (lp->index == 0) ug__listener_turn(lp);
        if (ug__gate_done(lp)) {
            if (run_posts(lp, 1)) break; /* closed to posts, none waiting: the loop ends */
            continue; /* posts ran: they may have taken a hold or given the loop work */
        }
        uint64_t next = ug__timer_next(&lp->timers), tq = ug__tq_next(lp);
        if (tq < next) next = tq;
        int64_t wait_ns = -1;
        if (next != UINT64_MAX)
            wait_ns = next <= lp->now_ms ? 0 : (int64_t)(next - lp->now_ms) * 1000000;
        if (lp->dirty_head != UG_NONE) wait_ns = 0;
        lp->time_stale = 1;
        uint32_t batch = wait_batch(lp); /* from the last wait's count, before it restarts */
        lp->wait_io = 0;
        int n = lp->be_ops->wait(lp->be, wait_ns, batch, on_completion, lp);
        if (n < 0) {
            ug__log(lp->srv, UG_LOG_ERROR, "loop %u: backend wait: %s", lp->index, strerror(-n));
            rc = n;
        }
    }
    if (rc < 0) { /* the loop failed: end everything it holds, still deliver cancels */
        lp->rc = rc;
        ug__gate_loop_failed(lp);
    }
    update_time(lp);
    while (!run_posts(lp, 1)) { /* a failed loop still runs what was posted to it */
    }
    /* A deadline timeout still armed is not removed: the run is not restarted (ug_server_run
     * runs once), and the timeout goes with the backend at ug_server_free. */
    ug__loop_thread_server = NULL;
    return rc;
}
