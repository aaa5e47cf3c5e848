/* Timeout queues: one intrusive list per timeout kind, sorted by deadline because every
 * connection in a queue has the same timeout and joins at the tail (see core.h). */
#include "core.h"

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
    c->tq = UG_TQ_NONE;
    c->tq_prev = c->tq_next = UG_NONE;
}

static void tq_append(ug__loop *lp, ug__conn *c, enum ug__tq q) {
    uint32_t idx = ug__conn_idx(lp, c);
    c->tq = (uint8_t)q;
    c->deadline_ms = lp->now_ms + lp->tq[q].timeout_ms;
    c->tq_next = UG_NONE;
    c->tq_prev = lp->tq[q].tail;
    if (c->tq_prev != UG_NONE)
        lp->slots[c->tq_prev].tq_next = idx;
    else
        lp->tq[q].head = idx;
    lp->tq[q].tail = idx;
}

void ug__tq_set(ug__loop *lp, ug__conn *c, enum ug__tq q) {
    if (c->tq == q) return;
    tq_unlink(lp, c);
    if (q != UG_TQ_NONE && lp->tq[q].timeout_ms) tq_append(lp, c, q);
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
