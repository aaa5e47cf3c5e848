/*
 * io_uring backend: one ring per backend object, multishot accept, multishot recv into a
 * provided buffer ring, send/sendmsg, ASYNC_CANCEL, absolute timeouts, eventfd wake.
 *
 * This is the only file of ugate that includes <liburing.h> (Debian's liburing 2.3).
 *
 * Hot-path rules:
 * - one io_uring_enter per wait(): SQEs queued by the core (also from inside the completion
 *   callback) are submitted by the next wait(), together with the wait for completions;
 * - a wait() asked for a batch sleeps until that many completions are ready or, once
 *   UG__BATCH_WAIT_US have passed since it began, until one is (the kernel's min-wait
 *   timeout, 6.12): fewer wake-ups and entries per request on a busy loop;
 * - no malloc per operation: data the kernel reads at submission (the msghdr of a sendmsg,
 *   the timespec of a timeout) lives in a side array indexed like the SQE array. With
 *   IORING_FEAT_SUBMIT_STABLE (every kernel that has multishot recv) the kernel copies that
 *   data while it consumes the SQE, and io_uring_get_sqe() hands an SQE slot out again only
 *   after the kernel consumed it, so the side slot of an SQE is free exactly when the SQE is;
 * - each CQE is copied out and the CQ head advanced *before* the callback runs, so the
 *   callback's own submissions (io_uring_get_sqe may have to submit when the SQ is full)
 *   find the CQ as empty as possible.
 */
#include "backend.h"
#include "fault.h"

#include <errno.h>
#include <liburing.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Internal user_data values (top nibble 0xF, see UG__UD_RESERVED in backend.h). */
#define UD_INTERNAL (UINT64_C(0xF) << 60)
#define UD_WAKE (UD_INTERNAL | 1)      /* read on the wake eventfd */
#define UD_CANCEL (UD_INTERNAL | 2)    /* ASYNC_CANCEL issued by cancel() */
#define UD_TIMER_DEL (UD_INTERNAL | 3) /* TIMEOUT_REMOVE issued by timer_cancel() */

#define BGID 0          /* the one provided-buffer group */
#define MAX_BUFS 32768u /* the kernel wants a power of two below 65536 entries */
#define MAX_BUF_SIZE (1u << 30)
#define OVERFLOW_ROUNDS 8 /* reaping rounds per wait() while the CQ has overflowed */

/* Newer than liburing 2.3's headers. */
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif

/* The kernel's struct io_uring_getevents_arg since 6.12: liburing 2.3 calls min_wait_usec
 * "pad" and never sets it, so a batched wait enters the kernel itself (enter_batched). */
typedef struct getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec;
    uint64_t ts;
} getevents_arg;
_Static_assert(sizeof(getevents_arg) == sizeof(struct io_uring_getevents_arg),
               "the kernel's getevents argument");

/* A batched wait without a deadline still gives the kernel one: without it the min-wait
 * timer ends the wait even when nothing completed. A loop that asks for a batch and then
 * sees nothing turns once per this (it asks for one next time: see wait_batch). */
#define BATCH_IDLE_NS (INT64_C(60) * 1000000000)

/* Submission-time data of one SQE slot (see the comment at the top). */
typedef union sqe_side {
    struct msghdr msg;
    struct __kernel_timespec ts;
} sqe_side;

struct ug__backend {
    struct io_uring ring;
    sqe_side *side;               /* ring.sq.ring_entries slots */
    struct io_uring_buf_ring *br; /* provided buffer ring, br_entries entries */
    char *bufs;                   /* nbufs * buf_size bytes, mmap'd */
    size_t bufs_len;
    size_t br_len;
    uint32_t buf_size;
    uint32_t nbufs;
    uint32_t br_mask;
    uint32_t br_pending; /* buffers added to the ring but not yet published (tail) */
    uint8_t skip_ok;     /* IOSQE_CQE_SKIP_SUCCESS when the kernel has it, else 0 */
    bool enabled;        /* ring created R_DISABLED: enabled by the owner thread */
    bool batch_ok;       /* the kernel has the min-wait timeout and batching is not off */
    bool reg_ring;       /* the ring fd is registered: enter with IORING_ENTER_REGISTERED_RING */
    bool br_registered;
    bool wake_armed;  /* the eventfd read is queued or in flight */
    int efd;          /* wake eventfd; io_uring poll-arms the read (no io-wq worker) */
    uint64_t efd_val; /* target of the armed eventfd read */
};

/* Publish the buffers recv_release() put back: one release store per batch. Called before
 * every io_uring_enter, which is the only point where (with DEFER_TASKRUN) the kernel
 * picks buffers; without DEFER_TASKRUN they are still published at least once per wait(). */
static inline void publish_bufs(ug__backend *b) {
    if (b->br_pending) {
        io_uring_buf_ring_advance(b->br, (int)b->br_pending);
        b->br_pending = 0;
    }
}

/* A lever switched off for measuring it (tools/bench --lever): its variable set to 1. */
static bool lever_off(const char *var) {
    const char *v = getenv(var);
    return v && v[0] == '1';
}

/* The ring is created disabled so that the thread which runs the loop, not the one which
 * called create(), becomes its single issuer. Registering the ring fd is per thread too
 * (it saves an fdget/fdput per io_uring_enter), so it is done here as well. */
static int enable_ring(ug__backend *b) {
    /* Debian's liburing 2.3 declares io_uring_enable_rings() but does not export it. */
    int r = io_uring_register((unsigned)b->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    if (r < 0) return r;
    /* Optional (best effort); UGATE_URING_NO_REG_RING=1 leaves it out, for measuring it
     * (tools/bench --lever reg-ring). */
    if (!lever_off("UGATE_URING_NO_REG_RING"))
        b->reg_ring = io_uring_register_ring_fd(&b->ring) == 1;
    b->enabled = true;
    return 0;
}

static int arm_wake_read(ug__backend *b);

static inline int before_enter(ug__backend *b) {
    publish_bufs(b);
    if (UNLIKELY(!b->enabled)) {
        int r = enable_ring(b);
        if (r < 0) return r;
    }
    /* A wake read that could not be re-armed (SQ full) is retried here, before every enter:
     * without it, ug_server_shutdown from a signal handler would never be seen. If the SQ is
     * still full, what it holds is submitted first: the enter that follows must not sleep
     * without the wake read. */
    if (UNLIKELY(!b->wake_armed) && arm_wake_read(b) != 0) {
        (void)io_uring_submit(&b->ring);
        (void)arm_wake_read(b); /* if even this fails, uring_wait does not sleep for long */
    }
    return 0;
}

/* Slow path of get_sqe(): the SQ is full, so submit what is queued (this does not reap
 * anything: completions stay in the CQ for wait()) and retry once. */
static struct io_uring_sqe *get_sqe_slow(ug__backend *b) {
    if (before_enter(b) < 0) return NULL;
    int r = io_uring_submit(&b->ring);
    if (r < 0 && r != -EAGAIN && r != -EBUSY && r != -EINTR) return NULL;
    return io_uring_get_sqe(&b->ring);
}

static inline struct io_uring_sqe *get_sqe(ug__backend *b) {
    struct io_uring_sqe *s = io_uring_get_sqe(&b->ring);
    if (UNLIKELY(!s)) s = get_sqe_slow(b);
    return s;
}

static inline sqe_side *side_of(ug__backend *b, const struct io_uring_sqe *s) {
    return &b->side[s - b->ring.sq.sqes];
}

static int arm_wake_read(ug__backend *b) {
    struct io_uring_sqe *s = io_uring_get_sqe(&b->ring); /* not get_sqe: before_enter calls it */
    if (!s) return -EBUSY;
    io_uring_prep_read(s, b->efd, &b->efd_val, sizeof b->efd_val, 0);
    io_uring_sqe_set_data64(s, UD_WAKE);
    b->wake_armed = true;
    return 0;
}

static void uring_destroy(ug__backend *b);

/* Flag sets tried in order. SINGLE_ISSUER (6.0) is required: it arrived with multishot
 * recv, so a kernel that refuses it cannot run this backend and create() reports -ENOSYS.
 * R_DISABLED delays the choice of the issuer thread to the first wait(); CQSIZE|CLAMP give
 * a CQ of 4x the SQ; SUBMIT_ALL keeps one bad SQE from stalling the rest of a batch. */
static const unsigned setup_tries[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SINGLE_ISSUER,
};

static int setup_ring(ug__backend *b, unsigned entries) {
    int r = -EINVAL;
    for (size_t i = 0; i < sizeof setup_tries / sizeof setup_tries[0]; i++) {
        struct io_uring_params ip;
        memset(&ip, 0, sizeof ip);
        ip.flags = setup_tries[i] | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP |
                   IORING_SETUP_SUBMIT_ALL | IORING_SETUP_R_DISABLED;
        ip.cq_entries = entries * 4;
        r = io_uring_queue_init_params(entries, &b->ring, &ip);
        if (r == 0) {
            if (!(ip.features & IORING_FEAT_SUBMIT_STABLE)) {
                io_uring_queue_exit(&b->ring);
                return -ENOSYS;
            }
            b->skip_ok = (ip.features & IORING_FEAT_CQE_SKIP) ? IOSQE_CQE_SKIP_SUCCESS : 0;
            /* UGATE_URING_NO_BATCH_WAIT=1 leaves batched waits out, for measuring them
             * (tools/bench --lever batch-wait). */
            b->batch_ok =
                (ip.features & IORING_FEAT_MIN_TIMEOUT) && !lever_off("UGATE_URING_NO_BATCH_WAIT");
            /* enter_batched publishes the SQ tail itself, as liburing does, which needs the
             * SQ array to map slot i to SQE i (liburing 2.3 maps it so; versions that map it
             * at each submit map it the same way). */
            for (unsigned k = 0; k < b->ring.sq.ring_entries; k++) b->ring.sq.array[k] = k;
            return 0;
        }
        if (r != -EINVAL) return r; /* -ENOSYS, -EPERM (io_uring_disabled), -ENOMEM... */
    }
    return r == -EINVAL ? -ENOSYS : r;
}

static int setup_buffers(ug__backend *b) {
    uint32_t entries = 1;
    while (entries < b->nbufs) entries <<= 1;
    b->br_mask = entries - 1;
    b->br_len = ((size_t)entries * sizeof(struct io_uring_buf) + 4095) & ~(size_t)4095;
    void *mem = NULL;
    if (ug__memalign(&mem, 4096, b->br_len)) return -ENOMEM;
    memset(mem, 0, b->br_len);
    b->br = mem;
    b->bufs_len = (size_t)b->nbufs * b->buf_size;
    void *bufs =
        mmap(NULL, b->bufs_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bufs == MAP_FAILED) return -errno;
    b->bufs = bufs;

    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)b->br;
    reg.ring_entries = entries;
    reg.bgid = BGID;
    int r = io_uring_register_buf_ring(&b->ring, &reg, 0);
    if (r < 0) return r;
    b->br_registered = true;
    io_uring_buf_ring_init(b->br);
    for (uint32_t i = 0; i < b->nbufs; i++)
        io_uring_buf_ring_add(b->br, b->bufs + (size_t)i * b->buf_size, b->buf_size,
                              (unsigned short)i, (int)b->br_mask, (int)i);
    io_uring_buf_ring_advance(b->br, (int)b->nbufs);
    return 0;
}

static int uring_create(ug__backend **out, const ug__backend_params *p) {
    uint32_t entries = p && p->ring_entries ? p->ring_entries : 256;
    uint32_t nbufs = p && p->recv_buffers ? p->recv_buffers : 1024;
    uint32_t bsz = p && p->recv_buffer_size ? p->recv_buffer_size : 4096;
    *out = NULL;
    if (nbufs > MAX_BUFS || bsz > MAX_BUF_SIZE || entries > 32768) return -EINVAL;

    ug__backend *b = ug__calloc(1, sizeof *b);
    if (!b) return -ENOMEM;
    b->efd = -1;
    b->nbufs = nbufs;
    b->buf_size = bsz;
    int r = setup_ring(b, entries);
    if (r < 0) {
        free(b);
        return r;
    }
    b->side = ug__calloc(b->ring.sq.ring_entries, sizeof *b->side);
    if (!b->side) {
        r = -ENOMEM;
        goto fail;
    }
    if ((r = setup_buffers(b)) < 0) goto fail;
    b->efd = eventfd(0, EFD_CLOEXEC);
    if (b->efd < 0) {
        r = -errno;
        goto fail;
    }
    if ((r = arm_wake_read(b)) < 0) goto fail;
    *out = b;
    return 0;
fail:
    uring_destroy(b);
    return r;
}

static void uring_destroy(ug__backend *b) {
    if (!b) return;
    if (b->br_registered) (void)io_uring_unregister_buf_ring(&b->ring, BGID);
    /* Closing the ring cancels whatever is still armed; the kernel keeps its pins on the
     * buffer ring pages until then, so freeing our mappings afterwards is safe. */
    io_uring_queue_exit(&b->ring);
    if (b->bufs) munmap(b->bufs, b->bufs_len);
    free(b->br);
    free(b->side);
    if (b->efd >= 0) close(b->efd);
    free(b);
}

static int uring_accept(ug__backend *b, int lfd, uint64_t ud) {
    struct io_uring_sqe *s = get_sqe(b);
    if (UNLIKELY(!s)) return -EBUSY;
    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, ud);
    return 0;
}

static int uring_recv(ug__backend *b, int fd, uint64_t ud) {
    struct io_uring_sqe *s = get_sqe(b);
    if (UNLIKELY(!s)) return -EBUSY;
    io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    io_uring_sqe_set_data64(s, ud);
    return 0;
}

static void uring_recv_release(ug__backend *b, uint32_t buf_id) {
    if (UNLIKELY(buf_id >= b->nbufs)) return;
    io_uring_buf_ring_add(b->br, b->bufs + (size_t)buf_id * b->buf_size, b->buf_size,
                          (unsigned short)buf_id, (int)b->br_mask, (int)b->br_pending);
    b->br_pending++;
}

static int uring_send(ug__backend *b, int fd, const struct iovec *iov, unsigned iovcnt,
                      uint64_t ud) {
    struct io_uring_sqe *s = get_sqe(b);
    if (UNLIKELY(!s)) return -EBUSY;
    if (iovcnt <= 1) {
        io_uring_prep_send(s, fd, iovcnt ? iov[0].iov_base : NULL, iovcnt ? iov[0].iov_len : 0,
                           MSG_NOSIGNAL);
    } else {
        struct msghdr *m = &side_of(b, s)->msg;
        memset(m, 0, sizeof *m);
        m->msg_iov = (struct iovec *)iov; /* only read by the kernel */
        m->msg_iovlen = iovcnt;
        io_uring_prep_sendmsg(s, fd, m, MSG_NOSIGNAL);
    }
    io_uring_sqe_set_data64(s, ud);
    return 0;
}

static int uring_cancel(ug__backend *b, uint64_t target_ud) {
    struct io_uring_sqe *s = get_sqe(b);
    if (UNLIKELY(!s)) return -EBUSY;
    io_uring_prep_cancel64(s, target_ud, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(s, UD_CANCEL);
    s->flags |= b->skip_ok; /* its CQE is swallowed anyway; skip it when it succeeds */
    return 0;
}

static int uring_timer(ug__backend *b, uint64_t deadline_ns, uint64_t ud) {
    struct io_uring_sqe *s = get_sqe(b);
    if (UNLIKELY(!s)) return -EBUSY;
    struct __kernel_timespec *ts = &side_of(b, s)->ts;
    ts->tv_sec = (long long)(deadline_ns / 1000000000u);
    ts->tv_nsec = (long long)(deadline_ns % 1000000000u);
    io_uring_prep_timeout(s, ts, 0, IORING_TIMEOUT_ABS); /* CLOCK_MONOTONIC by default */
    io_uring_sqe_set_data64(s, ud);
    return 0;
}

static int uring_timer_cancel(ug__backend *b, uint64_t ud) {
    struct io_uring_sqe *s = get_sqe(b);
    if (UNLIKELY(!s)) return -EBUSY;
    io_uring_prep_timeout_remove(s, ud, 0);
    io_uring_sqe_set_data64(s, UD_TIMER_DEL);
    s->flags |= b->skip_ok;
    return 0;
}

static void internal_cqe(ug__backend *b, uint64_t ud, int32_t res) {
    /* Cancel / timeout-remove results (-ENOENT, -EALREADY, counts) are of no interest: the
     * target's own completion tells the core what happened. The wake read is re-armed
     * whatever it returned (EINTR, a cancel at teardown...), now or before the next enter. */
    (void)res;
    if (ud == UD_WAKE) {
        b->wake_armed = false;
        (void)arm_wake_read(b);
    }
}

/* Deliver every CQE that is in the CQ now. The tail is sampled once per round: CQEs that
 * callbacks cause (inline completions of a forced submit) are left for the next wait(),
 * which then returns at once (a batched one within UG__BATCH_WAIT_US). If the CQ overflowed, the
 * overflow list is flushed into the CQ (GETEVENTS) and delivered too, for a bounded number of
 * rounds. */
static int reap(ug__backend *b, ug__completion_cb cb, void *ctx) {
    struct io_uring *ring = &b->ring;
    const unsigned mask = ring->cq.ring_mask;
    int n = 0;
    for (int round = 0; round < OVERFLOW_ROUNDS; round++) {
        unsigned head = *ring->cq.khead;
        unsigned tail = io_uring_smp_load_acquire(ring->cq.ktail);
        while (head != tail) {
            const struct io_uring_cqe *cqe = &ring->cq.cqes[head & mask];
            uint64_t ud = cqe->user_data;
            int32_t res = cqe->res;
            uint32_t f = cqe->flags;
            head++;
            io_uring_cq_advance(ring, 1);
            if (UNLIKELY(UG__UD_RESERVED(ud))) {
                internal_cqe(b, ud, res);
                continue;
            }
            ug__completion c;
            c.ud = ud;
            /* Only a fired timeout completes with -ETIME in this backend. */
            c.res = UNLIKELY(res == -ETIME) ? 0 : res;
            c.flags = (f & IORING_CQE_F_MORE) ? UG__CF_MORE : 0;
            if (f & IORING_CQE_F_BUFFER) {
                c.flags |= UG__CF_BUFFER;
                c.buf_id = f >> IORING_CQE_BUFFER_SHIFT;
                c.data = b->bufs + (size_t)c.buf_id * b->buf_size;
            } else {
                c.buf_id = 0;
                c.data = NULL;
            }
            cb(ctx, &c);
            n++;
        }
        if (LIKELY(!io_uring_cq_has_overflow(ring))) break;
        if (before_enter(b) < 0) break;
        int r = io_uring_get_events(ring);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) break;
    }
    return n;
}

/* Longest sleep while the wake read could not be armed: wakes are then seen this late. */
#define UNARMED_WAIT_NS 1000000

/* Submit what is queued and wait for batch completions, or for UG__BATCH_WAIT_US once there
 * is one, or until timeout_ns (-1: BATCH_IDLE_NS). With DEFER_TASKRUN the kernel does not
 * even wake the thread before batch completions are pending or the min-wait timer fires. */
static int enter_batched(ug__backend *b, int64_t timeout_ns, uint32_t batch) {
    struct io_uring_sq *sq = &b->ring.sq;
    unsigned tail = sq->sqe_tail;
    if (sq->sqe_head != tail) {
        sq->sqe_head = tail;
        io_uring_smp_store_release(sq->ktail, tail);
    }
    unsigned to_submit = tail - *sq->khead;
    if (timeout_ns < 0) timeout_ns = BATCH_IDLE_NS;
    struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000,
                                   .tv_nsec = timeout_ns % 1000000000};
    /* A deadline nearer than the batching delay wins: timers are not made late. */
    uint64_t min_us = (uint64_t)timeout_ns / 1000;
    getevents_arg arg = {.min_wait_usec =
                             min_us < UG__BATCH_WAIT_US ? (uint32_t)min_us : UG__BATCH_WAIT_US,
                         .ts = (uint64_t)(uintptr_t)&ts};
    unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
    int fd = b->ring.ring_fd;
    if (b->reg_ring) {
        flags |= IORING_ENTER_REGISTERED_RING;
        fd = b->ring.enter_ring_fd;
    }
    long r = syscall(__NR_io_uring_enter, fd, to_submit, batch, flags, &arg, sizeof arg);
    return r < 0 ? -errno : (int)r;
}

static int uring_wait(ug__backend *b, int64_t timeout_ns, uint32_t batch, ug__completion_cb cb,
                      void *ctx) {
    int r = before_enter(b);
    if (UNLIKELY(r < 0)) return r;
    if (UNLIKELY(!b->wake_armed) && (timeout_ns < 0 || timeout_ns > UNARMED_WAIT_NS))
        timeout_ns = UNARMED_WAIT_NS;
    if (timeout_ns == 0) {
        /* Enter even with nothing to submit: with DEFER_TASKRUN, completions are only
         * produced inside io_uring_enter(GETEVENTS). */
        r = io_uring_submit_and_get_events(&b->ring);
    } else if (batch > 1 && b->batch_ok) {
        r = enter_batched(b, timeout_ns, batch);
    } else if (timeout_ns < 0) {
        r = io_uring_submit_and_wait(&b->ring, 1);
    } else {
        struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000,
                                       .tv_nsec = timeout_ns % 1000000000};
        struct io_uring_cqe *cqe;
        r = io_uring_submit_and_wait_timeout(&b->ring, &cqe, 1, &ts, NULL);
    }
    /* -ETIME: the timeout passed; -EINTR: a signal; -EAGAIN/-EBUSY: the kernel could not
     * take every SQE now (they stay queued). None of these prevents reaping. */
    if (UNLIKELY(r < 0) && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) return r;
    return reap(b, cb, ctx);
}

static void uring_wake(ug__backend *b) {
    uint64_t one = 1;
    ssize_t w = write(b->efd, &one, sizeof one); /* async-signal-safe */
    /* The eventfd is blocking (io_uring answers a read of an O_NONBLOCK file with -EAGAIN
     * instead of waiting), but this write cannot block: the read armed on the ring takes
     * the counter back to 0 at every wake, far below its 2^64 - 2 limit. */
    (void)w;
}

/* shutdown(2) and close(2) stay system calls. Through the ring, IORING_OP_SHUTDOWN runs only
 * on an io-wq worker (the kernel refuses its non-blocking issue), which cost 1.9x the CPU per
 * request on conn/request; IORING_OP_CLOSE saved its system call but no CPU that could be
 * measured (docs/bench/levers.md). */
static int uring_shutdown(ug__backend *b, int fd, int how) {
    (void)b;
    return shutdown(fd, how) < 0 ? -errno : 0;
}

static int uring_close(ug__backend *b, int fd) {
    (void)b;
    return close(fd) < 0 ? -errno : 0;
}

const ug__backend_ops ug__backend_uring = {
    .name = "io_uring",
    .create = uring_create,
    .destroy = uring_destroy,
    .accept = uring_accept,
    .recv = uring_recv,
    .recv_release = uring_recv_release,
    .send = uring_send,
    .cancel = uring_cancel,
    .timer = uring_timer,
    .timer_cancel = uring_timer_cancel,
    .wait = uring_wait,
    .wake = uring_wake,
    .shutdown = uring_shutdown,
    .close = uring_close,
};
