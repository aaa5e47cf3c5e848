/* The timeout queues (src/tq.c) on their own: compiled with a recording ug__conn_timeout
 * instead of the connection state machine, over a loop that has only slots, a clock and
 * the queues. Deadlines, order of expiry, touch, leaving and changing queues, a disabled
 * timeout, the earliest deadline across queues, expiry callbacks that re-queue, and random
 * operations against a model. Deterministic (fixed-seed PRNG). */
#include "core.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

enum { NSLOTS = 64 };

static ug__loop *lp;
static ug__conn slots[NSLOTS];

/* What expired, in order, and in which queue. */
static uint32_t fired[4 * NSLOTS * 64];
static enum ug__tq fired_q[4 * NSLOTS * 64];
static unsigned nfired;
/* Set by a test: on expiry, put the connection into this queue (UG_TQ_NONE: leave it). */
static enum ug__tq requeue_to;

void ug__conn_timeout(ug__loop *l, ug__conn *c, enum ug__tq q) {
    CU_ASSERT_EQUAL(c->tq, UG_TQ_NONE); /* unlinked before its callback runs */
    CU_ASSERT(c->deadline_ms <= l->now_ms);
    if (nfired < sizeof fired / sizeof fired[0]) {
        fired[nfired] = ug__conn_idx(l, c);
        fired_q[nfired++] = q;
    }
    if (requeue_to != UG_TQ_NONE) ug__tq_set(l, c, requeue_to);
}

/* The views are conn.c's; here they are only recorded. */
void ug__conn_view(ug__loop *l, ug__conn *c, enum ug__view v) {
    (void)l;
    c->view = (uint8_t)v;
}

static int setup(void) {
    lp = calloc(1, sizeof *lp);
    return lp ? 0 : -1;
}
static int teardown(void) {
    free(lp);
    return 0;
}

static void reset(void) {
    memset(slots, 0, sizeof slots);
    for (unsigned i = 0; i < NSLOTS; i++) {
        slots[i].tq = UG_TQ_NONE;
        slots[i].tq_prev = slots[i].tq_next = UG_NONE;
    }
    lp->slots = slots;
    lp->nslots = NSLOTS;
    lp->now_ms = 1000;
    for (int q = 0; q < UG_TQ_COUNT; q++) {
        lp->tq[q].head = lp->tq[q].tail = UG_NONE;
        lp->tq[q].timeout_ms = 100u * (unsigned)q;
    }
    nfired = 0;
    requeue_to = UG_TQ_NONE;
}

/* Every queue is a consistent doubly linked list, sorted by deadline, whose members say they
 * are in it; every connection that says it is queued is in exactly its queue. */
static int queues_ok(void) {
    unsigned seen = 0;
    for (int q = UG_TQ_NONE + 1; q < UG_TQ_COUNT; q++) {
        uint32_t prev = UG_NONE;
        uint64_t last = 0;
        for (uint32_t i = lp->tq[q].head; i != UG_NONE; i = slots[i].tq_next) {
            if (i >= NSLOTS || slots[i].tq != q || slots[i].tq_prev != prev) return 0;
            if (slots[i].deadline_ms < last) return 0;
            last = slots[i].deadline_ms;
            prev = i;
            if (++seen > NSLOTS) return 0; /* a cycle */
        }
        if (lp->tq[q].tail != prev) return 0;
    }
    unsigned queued = 0;
    for (unsigned i = 0; i < NSLOTS; i++) queued += slots[i].tq != UG_TQ_NONE;
    return queued == seen;
}

static void test_deadlines_and_order(void) {
    reset();
    CU_ASSERT_EQUAL(ug__tq_next(lp), UINT64_MAX);
    ug__tq_set(lp, &slots[3], UG_TQ_IDLE); /* 1000 + 100 */
    lp->now_ms = 1010;
    ug__tq_set(lp, &slots[1], UG_TQ_IDLE);   /* 1110 */
    ug__tq_set(lp, &slots[2], UG_TQ_HEADER); /* 1210 */
    CU_ASSERT(queues_ok());
    CU_ASSERT_EQUAL(slots[3].deadline_ms, 1100);
    CU_ASSERT_EQUAL(ug__tq_next(lp), 1100);
    lp->now_ms = 1099;
    ug__tq_expire(lp);
    CU_ASSERT_EQUAL(nfired, 0);
    lp->now_ms = 1110; /* a deadline equal to now has expired */
    ug__tq_expire(lp);
    CU_ASSERT_EQUAL(nfired, 2);
    CU_ASSERT(fired[0] == 3 && fired[1] == 1 && fired_q[0] == UG_TQ_IDLE);
    CU_ASSERT_EQUAL(ug__tq_next(lp), 1210);
    lp->now_ms = 5000;
    ug__tq_expire(lp);
    CU_ASSERT(nfired == 3 && fired[2] == 2 && fired_q[2] == UG_TQ_HEADER);
    CU_ASSERT_EQUAL(ug__tq_next(lp), UINT64_MAX);
    CU_ASSERT(queues_ok());
}

static void test_touch_set_and_leave(void) {
    reset();
    ug__tq_set(lp, &slots[0], UG_TQ_BODY);
    ug__tq_set(lp, &slots[1], UG_TQ_BODY);
    lp->now_ms = 1050;
    ug__tq_set(lp, &slots[0], UG_TQ_BODY); /* already there: the deadline stays */
    CU_ASSERT_EQUAL(slots[0].deadline_ms, 1300);
    ug__tq_touch(lp, &slots[0]); /* progress: a fresh deadline, at the tail */
    CU_ASSERT_EQUAL(slots[0].deadline_ms, 1350);
    CU_ASSERT_EQUAL(lp->tq[UG_TQ_BODY].head, 1);
    CU_ASSERT_EQUAL(lp->tq[UG_TQ_BODY].tail, 0);
    ug__tq_set(lp, &slots[1], UG_TQ_WRITE); /* moves: out of BODY, into WRITE */
    CU_ASSERT(slots[1].tq == UG_TQ_WRITE && slots[1].deadline_ms == 1450);
    CU_ASSERT_EQUAL(lp->tq[UG_TQ_BODY].head, 0);
    ug__tq_set(lp, &slots[0], UG_TQ_NONE);
    CU_ASSERT(slots[0].tq == UG_TQ_NONE && lp->tq[UG_TQ_BODY].head == UG_NONE);
    ug__tq_touch(lp, &slots[0]); /* not queued: stays out */
    CU_ASSERT_EQUAL(slots[0].tq, UG_TQ_NONE);
    CU_ASSERT(queues_ok());
    lp->now_ms = 100000;
    ug__tq_expire(lp);
    CU_ASSERT(nfired == 1 && fired[0] == 1);
}

/* A timeout of 0 is disabled: set leaves the connection in no queue (nothing expires), and
 * takes it out of the one it was in. */
static void test_disabled_timeout(void) {
    reset();
    lp->tq[UG_TQ_LINGER].timeout_ms = 0;
    ug__tq_set(lp, &slots[5], UG_TQ_IDLE);
    ug__tq_set(lp, &slots[5], UG_TQ_LINGER);
    CU_ASSERT_EQUAL(slots[5].tq, UG_TQ_NONE);
    CU_ASSERT_EQUAL(lp->tq[UG_TQ_IDLE].head, UG_NONE);
    CU_ASSERT_EQUAL(ug__tq_next(lp), UINT64_MAX);
    lp->now_ms = UINT32_MAX;
    ug__tq_expire(lp);
    CU_ASSERT_EQUAL(nfired, 0);
    CU_ASSERT(queues_ok());
}

/* Each queue stands for a view of the connection; passing through no queue keeps the view,
 * and a new connection under the header timeout is still new. */
static void test_views_follow_queues(void) {
    reset();
    ug__conn *c = &slots[3];
    c->view = UG_VIEW_NEW;
    ug__tq_set(lp, c, UG_TQ_HEADER);
    CU_ASSERT_EQUAL(c->view, UG_VIEW_NEW);
    ug__tq_set(lp, c, UG_TQ_WRITE);
    CU_ASSERT_EQUAL(c->view, UG_VIEW_WRITING);
    ug__tq_set(lp, c, UG_TQ_NONE);
    CU_ASSERT_EQUAL(c->view, UG_VIEW_WRITING);
    ug__tq_set(lp, c, UG_TQ_IDLE);
    CU_ASSERT_EQUAL(c->view, UG_VIEW_IDLE);
    ug__tq_set(lp, c, UG_TQ_HEADER);
    CU_ASSERT_EQUAL(c->view, UG_VIEW_READING);
    lp->tq[UG_TQ_BODY].timeout_ms = 0; /* disabled: no queue, but the view still changes */
    ug__tq_set(lp, c, UG_TQ_BODY);
    CU_ASSERT_EQUAL(c->tq, UG_TQ_NONE);
    CU_ASSERT_EQUAL(c->view, UG_VIEW_READING);
    ug__tq_set(lp, c, UG_TQ_LINGER);
    CU_ASSERT_EQUAL(c->view, UG_VIEW_LINGER);
    CU_ASSERT(queues_ok());
}

/* The handler queue is kept with handler_timeout_ms 0 (nothing expires from it), because
 * its head is the oldest deferred request, whose dispatch time is published. */
static void test_handler_queue_oldest(void) {
    reset();
    lp->tq[UG_TQ_HANDLER].timeout_ms = 0;
    struct ug_request r[3];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 3; i++) {
        r[i].t_dispatch_ms = 1000u + (unsigned)i;
        slots[i].ctx = &r[i];
        ug__tq_set(lp, &slots[i], UG_TQ_HANDLER);
        CU_ASSERT_EQUAL(slots[i].tq, UG_TQ_HANDLER);
    }
    CU_ASSERT_EQUAL(lp->t_oldest_deferred_ms, 1000u);
    CU_ASSERT_EQUAL(ug__tq_next(lp), UINT64_MAX);
    lp->now_ms = UINT32_MAX;
    ug__tq_expire(lp);
    CU_ASSERT_EQUAL(nfired, 0);
    ug__tq_set(lp, &slots[1], UG_TQ_NONE); /* not the head: the oldest stays */
    CU_ASSERT_EQUAL(lp->t_oldest_deferred_ms, 1000u);
    ug__tq_set(lp, &slots[0], UG_TQ_IDLE);
    CU_ASSERT_EQUAL(lp->t_oldest_deferred_ms, 1002u);
    ug__tq_set(lp, &slots[2], UG_TQ_NONE);
    CU_ASSERT_EQUAL(lp->t_oldest_deferred_ms, 0);
    for (int i = 0; i < 3; i++) slots[i].ctx = NULL;
    CU_ASSERT(queues_ok());
}

/* The earliest deadline is that of the earliest head across the queues, not of the first
 * queue: a long idle timeout and a short write timeout. */
static void test_next_across_queues(void) {
    reset();
    lp->tq[UG_TQ_IDLE].timeout_ms = 60000;
    lp->tq[UG_TQ_WRITE].timeout_ms = 5;
    ug__tq_set(lp, &slots[0], UG_TQ_IDLE);
    ug__tq_set(lp, &slots[1], UG_TQ_WRITE);
    CU_ASSERT_EQUAL(ug__tq_next(lp), 1005);
    lp->now_ms = 1005;
    ug__tq_expire(lp);
    CU_ASSERT(nfired == 1 && fired[0] == 1 && fired_q[0] == UG_TQ_WRITE);
    CU_ASSERT_EQUAL(ug__tq_next(lp), 61000);
}

/* An expiry that re-queues its connection (a timed-out request answered, the connection
 * lingering) must not make expire loop or skip: the linger deadline is in the future. */
static void test_expiry_requeues(void) {
    reset();
    for (unsigned i = 0; i < 10; i++) ug__tq_set(lp, &slots[i], UG_TQ_HANDLER);
    requeue_to = UG_TQ_LINGER;
    lp->now_ms = 1600;
    ug__tq_expire(lp);
    CU_ASSERT_EQUAL(nfired, 10);
    for (unsigned i = 0; i < 10; i++) {
        CU_ASSERT_EQUAL(fired[i], i);
        CU_ASSERT(slots[i].tq == UG_TQ_LINGER && slots[i].deadline_ms == 2100);
    }
    CU_ASSERT(queues_ok());
    requeue_to = UG_TQ_NONE;
    lp->now_ms = 2100;
    ug__tq_expire(lp);
    CU_ASSERT_EQUAL(nfired, 20);
    CU_ASSERT_EQUAL(ug__tq_next(lp), UINT64_MAX);
}

/* Random set, touch and clock steps against a model that keeps (queue, deadline) per
 * connection: expire fires exactly the connections whose deadline has passed, in deadline
 * order within a queue, and next is the model's minimum. */
static void test_random_against_model(void) {
    tu_srand(0x9e3779b97f4a7c15ull);
    reset();
    enum ug__tq mq[NSLOTS];
    uint64_t md[NSLOTS];
    for (unsigned i = 0; i < NSLOTS; i++) mq[i] = UG_TQ_NONE, md[i] = 0;
    for (int step = 0; step < 20000; step++) {
        unsigned i = (unsigned)(tu_rand() % NSLOTS);
        switch (tu_rand() % 4) {
        case 0: {
            enum ug__tq q = (enum ug__tq)(tu_rand() % UG_TQ_COUNT);
            ug__tq_set(lp, &slots[i], q);
            if (q != mq[i]) {
                mq[i] = q;
                if (q != UG_TQ_NONE) md[i] = lp->now_ms + lp->tq[q].timeout_ms;
            }
            break;
        }
        case 1:
            ug__tq_touch(lp, &slots[i]);
            if (mq[i] != UG_TQ_NONE) md[i] = lp->now_ms + lp->tq[mq[i]].timeout_ms;
            break;
        case 2:
            lp->now_ms += tu_rand() % 150;
            break;
        default: {
            unsigned before = nfired;
            ug__tq_expire(lp);
            unsigned expect = 0;
            for (unsigned k = 0; k < NSLOTS; k++)
                expect += mq[k] != UG_TQ_NONE && md[k] <= lp->now_ms;
            CU_ASSERT_EQUAL_FATAL(nfired - before, expect);
            for (unsigned k = before; k < nfired; k++) {
                uint32_t c = fired[k];
                CU_ASSERT_EQUAL_FATAL(fired_q[k], mq[c]);
                mq[c] = UG_TQ_NONE;
            }
            nfired = 0;
            break;
        }
        }
        CU_ASSERT_FATAL(queues_ok());
        uint64_t want = UINT64_MAX;
        for (unsigned k = 0; k < NSLOTS; k++) {
            CU_ASSERT_EQUAL_FATAL(slots[k].tq, mq[k]);
            if (mq[k] != UG_TQ_NONE) {
                CU_ASSERT_EQUAL_FATAL(slots[k].deadline_ms, md[k]);
                if (md[k] < want) want = md[k];
            }
        }
        CU_ASSERT_EQUAL_FATAL(ug__tq_next(lp), want);
    }
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("tq", setup, teardown);
    CU_add_test(s, "deadlines and order of expiry", test_deadlines_and_order);
    CU_add_test(s, "touch, set and leave", test_touch_set_and_leave);
    CU_add_test(s, "a disabled timeout", test_disabled_timeout);
    CU_add_test(s, "views follow the queues", test_views_follow_queues);
    CU_add_test(s, "the handler queue keeps the oldest deferred request",
                test_handler_queue_oldest);
    CU_add_test(s, "the earliest deadline across queues", test_next_across_queues);
    CU_add_test(s, "an expiry that re-queues", test_expiry_requeues);
    CU_add_test(s, "random operations against a model", test_random_against_model);
}

int main(void) {
    return tu_main(register_suites, 60);
}
