#include "timer.h"

#include "fault.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#define NOT_ARMED UINT32_MAX

void ug__timer_init(ug__timer *t, ug__timer_fn fn) {
    t->deadline = 0;
    t->heap_idx = NOT_ARMED;
    t->reserved = 0;
    t->fn = fn;
}

static int grow(ug__timer_heap *h, uint32_t need) {
    if (need <= h->cap) return 0;
    uint32_t cap = h->cap ? h->cap : 64;
    while (cap < need) cap *= 2;
    ug__timer **v = ug__realloc(h->v, (size_t)cap * sizeof *v);
    if (!v) return -ENOMEM;
    h->v = v;
    h->cap = cap;
    return 0;
}

int ug__timer_init_reserved(ug__timer_heap *h, ug__timer *t, ug__timer_fn fn) {
    ug__timer_init(t, fn);
    int rc = grow(h, h->n - h->reserved_armed + h->reserved + 1);
    if (rc) return rc;
    t->reserved = 1;
    h->reserved++;
    return 0;
}

int ug__timer_armed(const ug__timer *t) {
    return t->heap_idx != NOT_ARMED;
}

static void place(ug__timer_heap *h, uint32_t i, ug__timer *t) {
    h->v[i] = t;
    t->heap_idx = i;
}

static void sift_up(ug__timer_heap *h, uint32_t i) {
    ug__timer *t = h->v[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->v[parent]->deadline <= t->deadline) break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, t);
}

static void sift_down(ug__timer_heap *h, uint32_t i) {
    ug__timer *t = h->v[i];
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t best = t->deadline;
        if (l < h->n && h->v[l]->deadline < best) m = l, best = h->v[l]->deadline;
        if (r < h->n && h->v[r]->deadline < best) m = r;
        if (m == i) break;
        place(h, i, h->v[m]);
        i = m;
    }
    place(h, i, t);
}

void ug__timer_stop(ug__timer_heap *h, ug__timer *t) {
    uint32_t i = t->heap_idx;
    if (i == NOT_ARMED) return;
    t->heap_idx = NOT_ARMED;
    h->reserved_armed -= t->reserved;
    ug__timer *last = h->v[--h->n];
    if (i == h->n) return;
    place(h, i, last);
    if (i > 0 && h->v[(i - 1) / 2]->deadline > last->deadline)
        sift_up(h, i);
    else
        sift_down(h, i);
}

int ug__timer_start(ug__timer_heap *h, ug__timer *t, uint64_t deadline) {
    ug__timer_stop(h, t);
    if (t->reserved) {
        assert(h->n < h->cap);
        h->reserved_armed++;
    } else if (grow(h, h->n - h->reserved_armed + 1 + h->reserved)) {
        return -ENOMEM;
    }
    t->deadline = deadline;
    place(h, h->n++, t);
    sift_up(h, t->heap_idx);
    return 0;
}

uint64_t ug__timer_next(const ug__timer_heap *h) {
    return h->n ? h->v[0]->deadline : UINT64_MAX;
}

unsigned ug__timer_run(ug__timer_heap *h, uint64_t now_ms, void *ctx) {
    unsigned ran = 0;
    while (h->n && h->v[0]->deadline <= now_ms) {
        ug__timer *t = h->v[0];
        ug__timer_stop(h, t);
        ran++;
        t->fn(t, ctx);
    }
    return ran;
}

void ug__timer_heap_free(ug__timer_heap *h) {
    free(h->v);
    h->v = NULL;
    h->n = h->cap = h->reserved = h->reserved_armed = 0;
}
