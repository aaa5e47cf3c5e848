/*
 * The completion-style backend interface. The core reaches a connection's I/O (receive, send,
 * shutdown, close) and its loop's wait and wake only through this table; the listener's
 * set-up and socket options go through sock.c. Each backend keeps all of its syscalls and
 * #ifdefs in its own file (backend_uring.c is the only file that includes <liburing.h>).
 * Every loop has its own backend object.
 *
 * Every operation carries a 64-bit user_data (ud) that comes back in its completion(s).
 * Completions are delivered through the callback given to wait(). A multishot operation
 * (accept, recv) delivers completions with UG__CF_MORE set while it stays armed; the last
 * completion of an operation never has UG__CF_MORE, whatever its result. The core must not
 * free an object until the last completion of every operation it started has been seen.
 *
 * Rules common to both backends (test/test_backend.c checks them on each):
 * - user_data values whose top nibble is 0xF (UG__UD_RESERVED) belong to the backends (the
 *   io_uring backend tags its cancel, timeout-remove and wake-eventfd SQEs with them, and
 *   liburing itself uses ~0); the core must never start an operation with such a ud.
 * - The last completion of a multishot operation may still carry a result: an accepted fd
 *   (res >= 0) or received bytes with a buffer. Handle the result, then re-arm if wanted.
 *   This happens when the CQ overflows or the buffer pool runs dry mid-stream.
 * - Whenever UG__CF_BUFFER is set, give buf_id back with recv_release(), whatever res is.
 * - A multishot accept ends (no UG__CF_MORE) on any error, EMFILE/ENFILE included; the
 *   connection that could not be accepted stays in the listener's queue.
 * - All calls except wake() must come from one thread (io_uring SINGLE_ISSUER): the first
 *   thread that enters the kernel (wait()) owns the backend; create() may run on another
 *   thread, destroy() should run on the owner.
 * - epoll: at most one accept-or-recv and one send per fd at a time (-EBUSY otherwise), and
 *   accept() sets O_NONBLOCK on the listening socket.
 */
#ifndef UG_BACKEND_H
#define UG_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* The longest a backend that batches (see wait()) sleeps with a completion ready, hoping for
 * more: long enough to gather the requests a busy loop's connections send within it, short
 * beside a network round trip (docs/io_uring.md, "Batched waits"). */
#define UG__BATCH_WAIT_US 50u

#define UG__CF_MORE 1u   /* the multishot operation stays armed */
#define UG__CF_BUFFER 2u /* data/buf_id carry a provided buffer that must be released */

/* Backend-internal user_data range: top nibble 0xF. Never used by the core. */
#define UG__UD_RESERVED(ud) (((uint64_t)(ud) >> 60) == 0xFu)

typedef struct ug__completion {
    uint64_t ud;
    int32_t res; /* >= 0 result (accepted fd, bytes), or -errno */
    uint32_t flags;
    char *data;      /* recv: the bytes (res of them), when UG__CF_BUFFER */
    uint32_t buf_id; /* recv: give it back with recv_release() */
} ug__completion;

typedef void (*ug__completion_cb)(void *ctx, const ug__completion *c);

/* 0 picks a default (256 SQ entries, 1024 buffers of 4096 bytes). io_uring: CQ = 4 x SQ,
 * recv_buffers <= 32768; epoll: ring_entries bounds the events taken per epoll_wait. */
typedef struct ug__backend_params {
    uint32_t ring_entries;
    uint32_t recv_buffers;
    uint32_t recv_buffer_size;
} ug__backend_params;

typedef struct ug__backend ug__backend;

typedef struct ug__backend_ops {
    const char *name;
    /* Set up; returns 0 or -errno (e.g. -ENOSYS/-EPERM where the kernel refuses io_uring). */
    int (*create)(ug__backend **out, const ug__backend_params *p);
    /* Tear down. Outstanding operations are abandoned (the kernel's references go with the
     * ring); the core calls this only after its own objects are closed. */
    void (*destroy)(ug__backend *b);

    /* Multishot accept on a listening socket: one completion per connection (res = fd). */
    int (*accept)(ug__backend *b, int lfd, uint64_t ud);
    /* Multishot receive into provided buffers: one completion per read (res = bytes, 0 = EOF).
     * -ENOBUFS ends it (no CF_MORE) when the pool is empty: re-arm after releasing buffers. */
    int (*recv)(ug__backend *b, int fd, uint64_t ud);
    /* Give a receive buffer back to the pool once its bytes are consumed or copied. */
    void (*recv_release)(ug__backend *b, uint32_t buf_id);
    /* Send the iovecs (the memory must stay valid until the completion). res = bytes sent,
     * which may be short: the core sends the rest. */
    int (*send)(ug__backend *b, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t ud);
    /* Cancel every operation started with user_data target_ud. Each cancelled operation
     * completes with -ECANCELED (or its own result if it raced). The cancel itself produces
     * no completion for the core. */
    int (*cancel)(ug__backend *b, uint64_t target_ud);
    /* One-shot timer at an absolute CLOCK_MONOTONIC time; completes with res 0 (fired) or
     * -ECANCELED (timer_cancel). At most one per ud at a time. */
    int (*timer)(ug__backend *b, uint64_t deadline_ns, uint64_t ud);
    int (*timer_cancel)(ug__backend *b, uint64_t ud);

    /* Submit what was queued, wait until at least one completion is ready or timeout_ns
     * passes (-1: no limit, 0: don't wait), then deliver every ready completion to cb.
     * batch (>= 1) is how many completions the core expects soon: a backend that can may
     * sleep on until that many are ready, but returns with what is ready once its batching
     * delay (UG__BATCH_WAIT_US from the start of the wait) has passed, and at the first
     * completion after it (io_uring: the min-wait timeout; epoll ignores batch). A wake()
     * may then be seen up to that delay late.
     * Returns the number delivered or -errno (-EINTR is not an error: returns 0). */
    int (*wait)(ug__backend *b, int64_t timeout_ns, uint32_t batch, ug__completion_cb cb,
                void *ctx);
    /* Make a wait() in progress return soon. Any thread; async-signal-safe. */
    void (*wake)(ug__backend *b);

    /* Shut a connection down (SHUT_WR, SHUT_RDWR): an armed receive then completes (EOF) and
     * a send fails, so their final completions come. Close a descriptor once nothing is
     * armed on it. Both 0 or -errno. */
    int (*shutdown)(ug__backend *b, int fd, int how);
    int (*close)(ug__backend *b, int fd);
} ug__backend_ops;

extern const ug__backend_ops ug__backend_uring;
extern const ug__backend_ops ug__backend_epoll;

#endif
