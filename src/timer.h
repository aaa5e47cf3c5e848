/* A binary min-heap of intrusive timers, for request timers and the core's own (few, varied
 * durations), and the epoll backend's. Deadlines are in the unit of the heap's user:
 * milliseconds for a loop, nanoseconds for the epoll backend. Connection timeouts use the
 * O(1) timeout queues of tq.c instead. */
#ifndef UG_TIMER_H
#define UG_TIMER_H

#include <stdint.h>

typedef struct ug__timer ug__timer;
typedef void (*ug__timer_fn)(ug__timer *t, void *ctx);

struct ug__timer {
    uint64_t deadline; /* in the heap user's unit */
    uint32_t heap_idx; /* UINT32_MAX when not armed */
    uint8_t reserved;  /* has a heap slot set aside: starting it cannot fail */
    ug__timer_fn fn;
};

/* Invariant: cap >= (armed timers that are not reserved) + reserved, so a reserved timer
 * always finds a free slot and only the others can need the heap to grow. */
typedef struct ug__timer_heap {
    ug__timer **v;
    uint32_t n, cap;
    uint32_t reserved;       /* reserved timers */
    uint32_t reserved_armed; /* ... of which armed */
} ug__timer_heap;

void ug__timer_init(ug__timer *t, ug__timer_fn fn);
/* Init t and set a heap slot aside for it, so that ug__timer_start(h, t, ...) never fails:
 * for the timers that shutdown depends on. 0 or -ENOMEM (now, not later). */
int ug__timer_init_reserved(ug__timer_heap *h, ug__timer *t, ug__timer_fn fn);
int ug__timer_armed(const ug__timer *t);
/* Arm (or re-arm) t at deadline. 0, or -ENOMEM when the heap must grow and cannot (never
 * for a reserved timer). */
int ug__timer_start(ug__timer_heap *h, ug__timer *t, uint64_t deadline);
void ug__timer_stop(ug__timer_heap *h, ug__timer *t);
/* Earliest deadline, or UINT64_MAX when empty. */
uint64_t ug__timer_next(const ug__timer_heap *h);
/* Pop and run every timer due at now_ms. A callback may start or stop timers. Returns the
 * number run. */
unsigned ug__timer_run(ug__timer_heap *h, uint64_t now_ms, void *ctx);
void ug__timer_heap_free(ug__timer_heap *h);

#endif
