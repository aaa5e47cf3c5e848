/* The timer heap (src/timer.c): ordering, stop, re-start, callbacks that start and stop
 * timers while ug__timer_run runs, ug__timer_next. Deterministic (fixed-seed PRNG). */
#include "testutil.h"
#include "timer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NOT_ARMED UINT32_MAX

typedef struct tt {
    ug__timer t; /* first: the callback finds its tt from the timer pointer */
    int id;
    int fired;
    uint64_t fired_at_deadline;
} tt;

/* The order in which callbacks ran. */
static int order[20000];
static unsigned norder;
static uint64_t last_deadline;
static int order_ok;

static void record(ug__timer *t, void *ctx) {
    (void)ctx;
    tt *x = (tt *)t;
    x->fired++;
    x->fired_at_deadline = t->deadline;
    if (t->deadline < last_deadline) order_ok = 0;
    last_deadline = t->deadline;
    if (norder < sizeof order / sizeof order[0]) order[norder++] = x->id;
}

static void reset_record(void) {
    norder = 0;
    last_deadline = 0;
    order_ok = 1;
}

/* The heap property and the back-pointers, checked exhaustively. */
static int heap_ok(const ug__timer_heap *h) {
    if (h->n > h->cap) return 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->v[i]->heap_idx != i) return 0;
        if (i > 0 && h->v[(i - 1) / 2]->deadline > h->v[i]->deadline) return 0;
    }
    return 1;
}

static uint64_t min_armed(tt *v, int n) {
    uint64_t m = UINT64_MAX;
    for (int i = 0; i < n; i++)
        if (ug__timer_armed(&v[i].t) && v[i].t.deadline < m) m = v[i].t.deadline;
    return m;
}

static void test_empty(void) {
    ug__timer_heap h = {0};
    CU_ASSERT_EQUAL(ug__timer_next(&h), UINT64_MAX);
    CU_ASSERT_EQUAL(ug__timer_run(&h, UINT64_MAX, NULL), 0);
    tt a;
    memset(&a, 0, sizeof a);
    ug__timer_init(&a.t, record);
    CU_ASSERT(!ug__timer_armed(&a.t));
    CU_ASSERT_EQUAL(a.t.heap_idx, NOT_ARMED);
    ug__timer_stop(&h, &a.t); /* stopping a timer that was never started: harmless */
    CU_ASSERT_EQUAL(h.n, 0);
    ug__timer_heap_free(&h);
    ug__timer_heap_free(&h); /* twice: harmless */
}

static void test_random_order(void) {
    enum { N = 5000 };
    static tt v[N];
    ug__timer_heap h = {0};
    tu_srand(0x9e3779b97f4a7c15ull);
    reset_record();
    for (int i = 0; i < N; i++) {
        memset(&v[i], 0, sizeof v[i]);
        v[i].id = i;
        ug__timer_init(&v[i].t, record);
        /* Narrow range: many equal deadlines. */
        CU_ASSERT_EQUAL_FATAL(ug__timer_start(&h, &v[i].t, 1 + tu_rand() % 2000), 0);
    }
    CU_ASSERT_EQUAL(h.n, N);
    CU_ASSERT(heap_ok(&h));
    CU_ASSERT_EQUAL(ug__timer_next(&h), min_armed(v, N));

    /* Advance in steps: exactly the timers due at each step run, in deadline order. */
    unsigned total = 0;
    for (uint64_t now = 0; now <= 2000; now += 97) {
        unsigned before = norder;
        unsigned ran = ug__timer_run(&h, now, NULL);
        CU_ASSERT_EQUAL(ran, norder - before);
        total += ran;
        CU_ASSERT(heap_ok(&h));
        CU_ASSERT(ug__timer_next(&h) > now);
        CU_ASSERT_EQUAL(ug__timer_next(&h), min_armed(v, N));
        unsigned due = 0;
        for (int i = 0; i < N; i++) due += v[i].t.deadline <= now;
        CU_ASSERT_EQUAL(total, due);
    }
    total += ug__timer_run(&h, UINT64_MAX, NULL);
    CU_ASSERT_EQUAL(total, N);
    CU_ASSERT(order_ok);
    CU_ASSERT_EQUAL(h.n, 0);
    CU_ASSERT_EQUAL(ug__timer_next(&h), UINT64_MAX);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(v[i].fired, 1);
        CU_ASSERT(!ug__timer_armed(&v[i].t));
    }
    ug__timer_heap_free(&h);
}

static void test_extreme_deadlines(void) {
    tt v[4];
    ug__timer_heap h = {0};
    uint64_t d[4] = {UINT64_MAX - 1, 0, 1, UINT64_MAX - 2};
    reset_record();
    for (int i = 0; i < 4; i++) {
        memset(&v[i], 0, sizeof v[i]);
        v[i].id = i;
        ug__timer_init(&v[i].t, record);
        ug__timer_start(&h, &v[i].t, d[i]);
    }
    CU_ASSERT_EQUAL(ug__timer_next(&h), 0);
    CU_ASSERT_EQUAL(ug__timer_run(&h, 0, NULL), 1);
    CU_ASSERT_EQUAL(ug__timer_run(&h, UINT64_MAX - 2, NULL), 2);
    CU_ASSERT_EQUAL(ug__timer_next(&h), UINT64_MAX - 1);
    CU_ASSERT_EQUAL(ug__timer_run(&h, UINT64_MAX - 1, NULL), 1);
    CU_ASSERT(order_ok);
    CU_ASSERT_EQUAL(norder, 4);
    CU_ASSERT_EQUAL(order[0], 1);
    CU_ASSERT_EQUAL(order[1], 2);
    CU_ASSERT_EQUAL(order[2], 3);
    CU_ASSERT_EQUAL(order[3], 0);
    ug__timer_heap_free(&h);
}

static void test_stop_arbitrary(void) {
    enum { N = 3000 };
    static tt v[N];
    static int stopped[N];
    ug__timer_heap h = {0};
    tu_srand(12345);
    reset_record();
    for (int i = 0; i < N; i++) {
        memset(&v[i], 0, sizeof v[i]);
        v[i].id = i;
        stopped[i] = 0;
        ug__timer_init(&v[i].t, record);
        ug__timer_start(&h, &v[i].t, tu_rand() % 100000);
    }
    /* Stop the root, the last element, and then random ones (some twice). */
    ug__timer *root = h.v[0];
    ug__timer_stop(&h, root);
    stopped[((tt *)root)->id] = 1;
    CU_ASSERT(!ug__timer_armed(root));
    CU_ASSERT(heap_ok(&h));
    ug__timer *last = h.v[h.n - 1];
    ug__timer_stop(&h, last);
    stopped[((tt *)last)->id] = 1;
    CU_ASSERT(heap_ok(&h));
    for (int k = 0; k < N; k++) {
        int i = (int)(tu_rand() % N);
        ug__timer_stop(&h, &v[i].t);
        stopped[i] = 1;
        if (k % 64 == 0) CU_ASSERT(heap_ok(&h));
    }
    CU_ASSERT(heap_ok(&h));
    uint32_t live = 0;
    for (int i = 0; i < N; i++) {
        live += !stopped[i];
        CU_ASSERT_EQUAL(ug__timer_armed(&v[i].t), !stopped[i]);
    }
    CU_ASSERT_EQUAL(h.n, live);
    CU_ASSERT_EQUAL(ug__timer_next(&h), min_armed(v, N));
    CU_ASSERT_EQUAL(ug__timer_run(&h, UINT64_MAX, NULL), live);
    CU_ASSERT(order_ok);
    for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(v[i].fired, !stopped[i]);
    ug__timer_heap_free(&h);
}

/* Random interleaving of start, re-start and stop against a reference model. */
static void test_random_ops_model(void) {
    enum { N = 512, OPS = 40000 };
    static tt v[N];
    ug__timer_heap h = {0};
    tu_srand(777);
    reset_record();
    for (int i = 0; i < N; i++) {
        memset(&v[i], 0, sizeof v[i]);
        v[i].id = i;
        ug__timer_init(&v[i].t, record);
    }
    int bad = 0;
    for (int k = 0; k < OPS; k++) {
        int i = (int)(tu_rand() % N);
        switch (tu_rand() % 3) {
        case 0:
        case 1: {
            uint64_t d = tu_rand() % 5000;
            if (ug__timer_start(&h, &v[i].t, d)) bad++;
            if (v[i].t.deadline != d || !ug__timer_armed(&v[i].t)) bad++;
            break;
        }
        default:
            ug__timer_stop(&h, &v[i].t);
            if (ug__timer_armed(&v[i].t)) bad++;
        }
        if (ug__timer_next(&h) != min_armed(v, N)) bad++;
        if (k % 256 == 0 && !heap_ok(&h)) bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(heap_ok(&h));
    uint32_t armed = 0;
    for (int i = 0; i < N; i++) armed += ug__timer_armed(&v[i].t) != 0;
    CU_ASSERT_EQUAL(h.n, armed);
    CU_ASSERT_EQUAL(ug__timer_run(&h, UINT64_MAX, NULL), armed);
    CU_ASSERT(order_ok);
    ug__timer_heap_free(&h);
}

static void test_restart(void) {
    tt a, b, c;
    ug__timer_heap h = {0};
    tt *all[3] = {&a, &b, &c};
    for (int i = 0; i < 3; i++) {
        memset(all[i], 0, sizeof *all[i]);
        all[i]->id = i;
        ug__timer_init(&all[i]->t, record);
    }
    reset_record();
    ug__timer_start(&h, &a.t, 100);
    ug__timer_start(&h, &b.t, 200);
    ug__timer_start(&h, &c.t, 300);
    /* Later, then earlier than everything, then the same deadline again. */
    CU_ASSERT_EQUAL(ug__timer_start(&h, &a.t, 400), 0);
    CU_ASSERT_EQUAL(h.n, 3);
    CU_ASSERT_EQUAL(ug__timer_next(&h), 200);
    CU_ASSERT_EQUAL(ug__timer_start(&h, &c.t, 50), 0);
    CU_ASSERT_EQUAL(h.n, 3);
    CU_ASSERT_EQUAL(ug__timer_next(&h), 50);
    CU_ASSERT_EQUAL(ug__timer_start(&h, &c.t, 50), 0);
    CU_ASSERT_EQUAL(h.n, 3);
    CU_ASSERT(heap_ok(&h));
    CU_ASSERT_EQUAL(ug__timer_run(&h, 399, NULL), 2);
    CU_ASSERT_EQUAL(norder, 2);
    CU_ASSERT_EQUAL(order[0], 2);
    CU_ASSERT_EQUAL(order[1], 1);
    CU_ASSERT_EQUAL(a.fired, 0);
    /* A fired timer can be started again. */
    CU_ASSERT_EQUAL(ug__timer_start(&h, &c.t, 500), 0);
    CU_ASSERT_EQUAL(ug__timer_run(&h, 1000, NULL), 2);
    CU_ASSERT_EQUAL(a.fired, 1);
    CU_ASSERT_EQUAL(b.fired, 1);
    CU_ASSERT_EQUAL(c.fired, 2);
    CU_ASSERT(order_ok);
    CU_ASSERT_EQUAL(h.n, 0);
    ug__timer_heap_free(&h);
}

/* ---- callbacks that change the heap while ug__timer_run runs ---- */

static ug__timer_heap ch;
static tt cv[8];
static uint64_t cnow;

/* 0: starts 1 (due now) and 2 (in the future); 3: stops 4 (due now, not yet run) and
 * restarts 5 (due now) into the future; 6: re-arms itself once, due now. */
static void chain(ug__timer *t, void *ctx) {
    record(t, ctx);
    tt *x = (tt *)t;
    CU_ASSERT_PTR_EQUAL(ctx, &ch);
    CU_ASSERT(!ug__timer_armed(t)); /* popped before its callback runs */
    switch (x->id) {
    case 0:
        ug__timer_start(&ch, &cv[1].t, cnow);
        ug__timer_start(&ch, &cv[2].t, cnow + 10);
        break;
    case 3:
        ug__timer_stop(&ch, &cv[4].t);
        ug__timer_start(&ch, &cv[5].t, cnow + 20);
        break;
    case 6:
        if (x->fired == 1) ug__timer_start(&ch, &x->t, cnow);
        break;
    default:
        break;
    }
    CU_ASSERT(heap_ok(&ch));
}

static void test_callbacks_modify_heap(void) {
    memset(&ch, 0, sizeof ch);
    reset_record();
    for (int i = 0; i < 8; i++) {
        memset(&cv[i], 0, sizeof cv[i]);
        cv[i].id = i;
        ug__timer_init(&cv[i].t, chain);
    }
    cnow = 100;
    ug__timer_start(&ch, &cv[0].t, 10);
    ug__timer_start(&ch, &cv[3].t, 20);
    ug__timer_start(&ch, &cv[4].t, 30);
    ug__timer_start(&ch, &cv[5].t, 40);
    ug__timer_start(&ch, &cv[6].t, 50);
    ug__timer_start(&ch, &cv[7].t, 1000);
    /* Runs 0, 3, 6, then 1 (started due by 0) and 6 again; not 4 (stopped), 5 (moved), 2
     * (future), 7 (future). */
    unsigned ran = ug__timer_run(&ch, cnow, &ch);
    CU_ASSERT_EQUAL(ran, 5);
    CU_ASSERT_EQUAL(cv[0].fired, 1);
    CU_ASSERT_EQUAL(cv[1].fired, 1);
    CU_ASSERT_EQUAL(cv[2].fired, 0);
    CU_ASSERT_EQUAL(cv[3].fired, 1);
    CU_ASSERT_EQUAL(cv[4].fired, 0);
    CU_ASSERT_EQUAL(cv[5].fired, 0);
    CU_ASSERT_EQUAL(cv[6].fired, 2);
    CU_ASSERT_EQUAL(cv[7].fired, 0);
    CU_ASSERT(!ug__timer_armed(&cv[4].t));
    CU_ASSERT_EQUAL(ch.n, 3); /* 2, 5, 7 */
    CU_ASSERT_EQUAL(ug__timer_next(&ch), cnow + 10);
    CU_ASSERT(heap_ok(&ch));
    CU_ASSERT_EQUAL(ug__timer_run(&ch, cnow + 20, &ch), 2);
    CU_ASSERT_EQUAL(cv[2].fired, 1);
    CU_ASSERT_EQUAL(cv[5].fired, 1);
    CU_ASSERT_EQUAL(ug__timer_next(&ch), 1000);
    ug__timer_stop(&ch, &cv[7].t);
    CU_ASSERT_EQUAL(ug__timer_next(&ch), UINT64_MAX);
    ug__timer_heap_free(&ch);
}

/* A callback that stops every other armed timer, including ones due in the same run. */
static tt sv[64];
static ug__timer_heap sh;
static void stop_all(ug__timer *t, void *ctx) {
    record(t, ctx);
    for (int i = 0; i < 64; i++) ug__timer_stop(&sh, &sv[i].t);
}

static void test_callback_stops_all(void) {
    memset(&sh, 0, sizeof sh);
    reset_record();
    for (int i = 0; i < 64; i++) {
        memset(&sv[i], 0, sizeof sv[i]);
        sv[i].id = i;
        ug__timer_init(&sv[i].t, i == 10 ? stop_all : record);
        ug__timer_start(&sh, &sv[i].t, (uint64_t)i);
    }
    CU_ASSERT_EQUAL(ug__timer_run(&sh, 1000, NULL), 11); /* 0..10, then nothing is left */
    CU_ASSERT_EQUAL(sh.n, 0);
    for (int i = 0; i < 64; i++) CU_ASSERT_EQUAL(sv[i].fired, i <= 10);
    ug__timer_heap_free(&sh);
}

/* Growth past the initial capacity keeps the armed timers (the heap holds pointers). */
static void test_growth(void) {
    enum { N = 1000 };
    static tt v[N];
    ug__timer_heap h = {0};
    reset_record();
    for (int i = 0; i < N; i++) {
        memset(&v[i], 0, sizeof v[i]);
        v[i].id = i;
        ug__timer_init(&v[i].t, record);
        CU_ASSERT_EQUAL(ug__timer_start(&h, &v[i].t, (uint64_t)(N - i)), 0);
    }
    CU_ASSERT(h.cap >= N);
    CU_ASSERT(heap_ok(&h));
    CU_ASSERT_EQUAL(ug__timer_next(&h), 1);
    CU_ASSERT_EQUAL(ug__timer_run(&h, N, NULL), N);
    CU_ASSERT(order_ok);
    CU_ASSERT_EQUAL(order[0], N - 1);
    CU_ASSERT_EQUAL(order[N - 1], 0);
    ug__timer_heap_free(&h);
    CU_ASSERT_PTR_NULL(h.v);
    CU_ASSERT_EQUAL(h.n, 0);
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("timer", NULL, NULL);
    CU_add_test(s, "empty heap", test_empty);
    CU_add_test(s, "random deadlines run in order", test_random_order);
    CU_add_test(s, "extreme deadlines", test_extreme_deadlines);
    CU_add_test(s, "stop arbitrary timers", test_stop_arbitrary);
    CU_add_test(s, "random start/stop against a model", test_random_ops_model);
    CU_add_test(s, "re-start", test_restart);
    CU_add_test(s, "callbacks start and stop timers", test_callbacks_modify_heap);
    CU_add_test(s, "callback stops everything", test_callback_stops_all);
    CU_add_test(s, "growth", test_growth);
}

int main(void) {
    return tu_main(register_suites, 60);
}
