/* Timeout queues: one intrusive list per timeout kind, sorted by deadline because every
 * connection in a queue has the same timeout and joins at the tail (see core.h). */
#include "core.h"

/* The handler queue's head is the oldest deferred request (requests join it as they are
 * deferred): its dispatch time is published for the metrics whenever the head changes. The
 * queue is kept even when handler_timeout_ms is 0 (its deadline then never comes), so that
 * the age is known either way. */
static void publish_oldest(ug__loop *lp) {
    uint32_t h = lp->tq[UG_TQ_HANDLER].head;
    const ug__conn *c = h == UG_NONE ? NULL : &lp->slots[h];
    UG_GAUGE_SET(lp->t_oldest_deferred_ms, c && c->ctx ? c->ctx->t_dispatch_ms : 0);
}

static void tq_unlink(ug__loop *lp, ug__conn *c) {
    if (c->tq == UG_TQ_NONE) return;
    if (c->tq_prev != UG_NONE)
        lp->slots[c->tq_prev].tq_next = c->tq_next;
    else
        lp->tq[c->tq].head = c->tq_next;
    if (c->tq_next != UG_NONE)
        lp->slots[c->tq_next].tq_prev = c->tq_prev;
    else
        lp->tq[c->tq].tail = c->tq_prev;
    int was_head = c->tq == UG_TQ_HANDLER && c->tq_prev == UG_NONE;
    c->tq = UG_TQ_NONE;
    c->tq_prev = c->tq_next = UG_NONE;
    if (was_head) publish_oldest(lp);
}

static void tq_append(ug__loop *lp, ug__conn *c, enum ug__tq q) {
    uint32_t idx = ug__conn_idx(lp, c);
    c->tq = (uint8_t)q;
    c->deadline_ms = lp->tq[q].timeout_ms ? lp->now_ms + lp->tq[q].timeout_ms : UINT64_MAX;
    c->tq_next = UG_NONE;
    c->tq_prev = lp->tq[q].tail;
    if (c->tq_prev != UG_NONE)
        lp->slots[c->tq_prev].tq_next = idx;
    else
        lp->tq[q].head = idx;
    lp->tq[q].tail = idx;
    if (q == UG_TQ_HANDLER && c->tq_prev == UG_NONE) publish_oldest(lp);
}

/* The view each queue stands for (UG_TQ_NONE changes nothing: a connection passes through
 * it between two queues, and streams or closes there, which conn.c says itself). */
static const uint8_t queue_view[UG_TQ_COUNT] = {
    [UG_TQ_NONE] = UG_VIEW_NONE,       [UG_TQ_IDLE] = UG_VIEW_IDLE,
    [UG_TQ_HEADER] = UG_VIEW_READING,  [UG_TQ_BODY] = UG_VIEW_READING,
    [UG_TQ_WRITE] = UG_VIEW_WRITING,   [UG_TQ_LINGER] = UG_VIEW_LINGER,
    [UG_TQ_HANDLER] = UG_VIEW_HANDLER,
};

void ug__tq_set(ug__loop *lp, ug__conn *c, enum ug__tq q) {
    if (c->tq == q) return;
    tq_unlink(lp, c);
    if (q == UG_TQ_NONE) return;
    /* A new connection waits for its first byte under the header timeout: it is still new. */
    if (c->view != queue_view[q] && !(c->view == UG_VIEW_NEW && q == UG_TQ_HEADER))
        ug__conn_view(lp, c, queue_view[q]);
    if (lp->tq[q].timeout_ms || q == UG_TQ_HANDLER) tq_append(lp, c, q);
}

void ug__tq_touch(ug__loop *lp, ug__conn *c) {
    enum ug__tq q = (enum ug__tq)c->tq;
    if (q == UG_TQ_NONE) return;
    tq_unlink(lp, c);
    tq_append(lp, c, q);
}

void ug__tq_expire(ug__loop *lp) {
    for (int q = UG_TQ_NONE + 1; q < UG_TQ_COUNT; q++) {
        while (lp->tq[q].head != UG_NONE) {
            ug__conn *c = &lp->slots[lp->tq[q].head];
            if (c->deadline_ms > lp->now_ms) break;
            tq_unlink(lp, c);
            ug__conn_timeout(lp, c, (enum ug__tq)q);
        }
    }
}

uint64_t ug__tq_next(const ug__loop *lp) {
    uint64_t d = UINT64_MAX;
    for (int q = UG_TQ_NONE + 1; q < UG_TQ_COUNT; q++)
        if (lp->tq[q].head != UG_NONE && lp->slots[lp->tq[q].head].deadline_ms < d)
            d = lp->slots[lp->tq[q].head].deadline_ms;
    return d;
}
