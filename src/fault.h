/* Allocation and clock indirection for the whole library.
 *
 * The production build (libugate.a) calls malloc and clock_gettime directly: every function
 * here is an inline pass-through. The test build of the same sources (libugate_fi.a, compiled
 * with UG_FAULT_INJECTION) adds two hooks so that a test can fail any allocation the library
 * makes and run the core on a virtual clock: that is how the fault-injection suite and the
 * connection fuzzer reach every error path deterministically. The hooks are process-wide and
 * exist only in that build; the installed library keeps no global mutable state (its one
 * thread-local says which server's loop runs on a thread: ug__loop_thread_server). */
#ifndef UG_FAULT_H
#define UG_FAULT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef UG_FAULT_INJECTION
/* Return non-zero to make this allocation of size bytes fail. NULL: never fail. */
extern int (*ug__fault_alloc_hook)(size_t size);
/* CLOCK_MONOTONIC replacement, in nanoseconds. NULL: the real clock. */
extern uint64_t (*ug__fault_clock_hook)(void);
#define UG__FAULT_ALLOC(n) (ug__fault_alloc_hook && ug__fault_alloc_hook(n))
#else
#define UG__FAULT_ALLOC(n) 0
#endif

static inline void *ug__malloc(size_t n) {
    return UG__FAULT_ALLOC(n) ? NULL : malloc(n);
}

static inline void *ug__calloc(size_t k, size_t n) {
    return UG__FAULT_ALLOC(k * n) ? NULL : calloc(k, n);
}

static inline void *ug__realloc(void *p, size_t n) {
    return UG__FAULT_ALLOC(n) ? NULL : realloc(p, n);
}

static inline char *ug__strdup(const char *s) {
    return UG__FAULT_ALLOC(strlen(s) + 1) ? NULL : strdup(s);
}

static inline int ug__memalign(void **out, size_t align, size_t n) {
    return UG__FAULT_ALLOC(n) ? -1 : posix_memalign(out, align, n);
}

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t ug__clock_ns(void) {
#ifdef UG_FAULT_INJECTION
    if (ug__fault_clock_hook) return ug__fault_clock_hook();
#endif
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
