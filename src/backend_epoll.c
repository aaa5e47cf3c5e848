/*
 * epoll backend: the completion interface of backend.h on top of readiness.
 *
 * - One epoll registration per fd, level-triggered, combining the read side (accept or
 *   recv) and the write side (a send waiting for EPOLLOUT) in a small per-fd record
 *   (fd-indexed table grown on demand). A registration is removed as soon as nothing is
 *   armed on the fd, so a closed-and-reused fd number starts clean.
 * - Completions are never delivered from inside an operation: everything goes through a
 *   FIFO that wait() drains. wait() first collects readiness (no callback runs while the
 *   epoll events are turned into completions), then delivers the completions that were
 *   queued when delivery started; the ones queued by callbacks go out on the next wait(),
 *   which then does not block.
 * - cancel() finds the armed operations of a ud through a small open-addressing hash.
 * - Timers live in the core's timer heap (timer.c, deadlines in ns here) whose earliest
 *   deadline bounds the epoll timeout
 *   (epoll_pwait2 for nanosecond resolution where available). Meant for a few timers.
 * - Memory: the per-fd table, the hash, the FIFO and the heap only grow (amortised); the
 *   receive buffers are one mapping handed out by a free stack of ids.
 *
 * Multishot semantics mirror the io_uring backend: accept delivers one completion per fd
 * with UG__CF_MORE and ends (no MORE) on any error other than EAGAIN, EMFILE included;
 * recv reads once per readiness into a pool buffer and ends on EOF (res 0), on an error, or
 * with -ENOBUFS when the pool is empty.
 */
#include "backend.h"
#include "fault.h"
#include "timer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ACCEPT_BATCH 64 /* accept4 calls per readiness of a listener */
#define MAX_EVENTS 1024

enum { RD_NONE = 0, RD_ACCEPT = 1, RD_RECV = 2 };
enum { OP_RD = 1, OP_WR = 2 }; /* hash entry kinds; 0 = empty slot */

typedef struct fdrec {
    uint64_t rd_ud; /* accept or recv */
    uint64_t wr_ud; /* send waiting for EPOLLOUT */
    const struct iovec *iov;
    unsigned iovcnt;
    uint32_t events; /* registered interest; 0 = not in the epoll set */
    uint8_t rd;      /* RD_* */
    uint8_t wr;      /* 1 while a send waits */
} fdrec;

typedef struct hent {
    uint64_t ud;
    int32_t fd;
    uint32_t op; /* OP_RD / OP_WR, 0 = empty */
} hent;

/* A timer (few: the core arms one per loop, the drain deadline). */
typedef struct ep_tmr {
    ug__timer t; /* deadline in ns */
    uint64_t ud;
    struct ep_tmr *free_next;
} ep_tmr;

struct ug__backend {
    int epfd;
    int efd;
    fdrec *fds;
    uint32_t nfds;
    hent *ht; /* power-of-two table, load <= 1/2 */
    uint32_t ht_mask;
    uint32_t ht_used;
    ug__timer_heap timers;
    ep_tmr *timer_free;
    ug__completion *q; /* FIFO ring, power-of-two capacity */
    uint32_t q_head;
    uint32_t q_len;
    uint32_t q_cap;
    char *bufs;
    size_t bufs_len;
    uint32_t buf_size;
    uint32_t nbufs;
    uint32_t *free_ids; /* stack of free buffer ids */
    uint32_t nfree;
    struct epoll_event *evs;
    int maxev;
    bool no_pwait2;
};

/* The core's clock: timer deadlines come from it. */
static uint64_t now_ns(void) {
    return ug__clock_ns();
}

/* ---- completion FIFO ---------------------------------------------------------------- */

/* Make room for k more completions. Called before the syscall whose result needs the
 * slot, so that a failed allocation never loses a completion (the operation stays armed
 * or the call fails with -ENOMEM instead). */
static bool q_reserve(ug__backend *b, uint32_t k) {
    if (b->q_len + k <= b->q_cap) return true;
    uint32_t cap = b->q_cap ? b->q_cap : 64;
    while (cap < b->q_len + k) cap *= 2;
    ug__completion *nq = ug__malloc((size_t)cap * sizeof *nq);
    if (!nq) return false;
    for (uint32_t i = 0; i < b->q_len; i++) nq[i] = b->q[(b->q_head + i) & (b->q_cap - 1)];
    free(b->q);
    b->q = nq;
    b->q_cap = cap;
    b->q_head = 0;
    return true;
}

/* Requires a prior q_reserve(). */
static void q_push(ug__backend *b, uint64_t ud, int32_t res, uint32_t flags, char *data,
                   uint32_t buf_id) {
    ug__completion *c = &b->q[(b->q_head + b->q_len) & (b->q_cap - 1)];
    c->ud = ud;
    c->res = res;
    c->flags = flags;
    c->data = data;
    c->buf_id = buf_id;
    b->q_len++;
}

/* ---- ud -> armed operation hash (for cancel) ------------------------------------------ */

static inline uint32_t h_slot(uint64_t ud, uint32_t mask) {
    return (uint32_t)((ud * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & mask;
}

static bool ht_grow(ug__backend *b) {
    uint32_t cap = b->ht ? (b->ht_mask + 1) * 2 : 64;
    hent *nt = ug__calloc(cap, sizeof *nt);
    if (!nt) return false;
    if (b->ht)
        for (uint32_t i = 0; i <= b->ht_mask; i++) {
            if (!b->ht[i].op) continue;
            uint32_t j = h_slot(b->ht[i].ud, cap - 1);
            while (nt[j].op) j = (j + 1) & (cap - 1);
            nt[j] = b->ht[i];
        }
    free(b->ht);
    b->ht = nt;
    b->ht_mask = cap - 1;
    return true;
}

static bool ht_insert(ug__backend *b, uint64_t ud, int fd, uint32_t op) {
    if (!b->ht || (b->ht_used + 1) * 2 > b->ht_mask + 1)
        if (!ht_grow(b)) return false;
    uint32_t i = h_slot(ud, b->ht_mask);
    while (b->ht[i].op) i = (i + 1) & b->ht_mask;
    b->ht[i].ud = ud;
    b->ht[i].fd = fd;
    b->ht[i].op = op;
    b->ht_used++;
    return true;
}

/* Index of an entry for ud (any fd/op when fd < 0), or -1. */
static int64_t ht_find(const ug__backend *b, uint64_t ud, int fd, uint32_t op) {
    if (!b->ht) return -1;
    for (uint32_t i = h_slot(ud, b->ht_mask);; i = (i + 1) & b->ht_mask) {
        const hent *e = &b->ht[i];
        if (!e->op) return -1;
        if (e->ud == ud && (fd < 0 || (e->fd == fd && e->op == op))) return i;
    }
}

/* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
static void ht_remove_at(ug__backend *b, uint32_t i) {
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & b->ht_mask;
        if (!b->ht[j].op) break;
        uint32_t k = h_slot(b->ht[j].ud, b->ht_mask);
        /* entry j may stay if its home k lies cyclically in (i, j] */
        bool stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (stays) continue;
        b->ht[i] = b->ht[j];
        i = j;
    }
    b->ht[i].op = 0;
    b->ht_used--;
}

static void ht_remove(ug__backend *b, uint64_t ud, int fd, uint32_t op) {
    int64_t i = ht_find(b, ud, fd, op);
    if (i >= 0) ht_remove_at(b, (uint32_t)i);
}

/* ---- timers ------------------------------------------------------------------------- */

static ep_tmr *timer_of(ug__timer *t) {
    return (ep_tmr *)(void *)((char *)t - offsetof(ep_tmr, t));
}

static void timer_put(ug__backend *b, ep_tmr *et) {
    et->free_next = b->timer_free;
    b->timer_free = et;
}

/* ---- per-fd records -------------------------------------------------------------------- */

static fdrec *fd_rec(ug__backend *b, int fd) {
    if (fd < 0) return NULL;
    if ((uint32_t)fd >= b->nfds) {
        uint32_t n = b->nfds ? b->nfds : 64;
        while (n <= (uint32_t)fd) n *= 2;
        fdrec *nf = ug__realloc(b->fds, (size_t)n * sizeof *nf);
        if (!nf) return NULL;
        memset(nf + b->nfds, 0, (size_t)(n - b->nfds) * sizeof *nf);
        b->fds = nf;
        b->nfds = n;
    }
    return &b->fds[fd];
}

/* Bring the epoll registration of fd in line with what is armed on it. */
static int sync_interest(ug__backend *b, int fd, fdrec *r) {
    uint32_t want = (r->rd ? EPOLLIN : 0u) | (r->wr ? EPOLLOUT : 0u);
    if (want == r->events) return 0;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = want;
    ev.data.fd = fd;
    int rc;
    if (!want) {
        /* Deregister: EPOLLHUP/EPOLLERR would otherwise keep firing for an idle fd. The
         * fd may already be closed (ENOENT/EBADF): nothing left to undo then. */
        (void)epoll_ctl(b->epfd, EPOLL_CTL_DEL, fd, NULL);
        r->events = 0;
        return 0;
    }
    if (!r->events) {
        rc = epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev);
        if (rc < 0 && errno == EEXIST) rc = epoll_ctl(b->epfd, EPOLL_CTL_MOD, fd, &ev);
    } else {
        rc = epoll_ctl(b->epfd, EPOLL_CTL_MOD, fd, &ev);
        if (rc < 0 && errno == ENOENT) rc = epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev);
    }
    if (rc < 0) return -errno;
    r->events = want;
    return 0;
}

/* End the read side of fd (final completion queued by the caller). */
static void disarm_rd(ug__backend *b, int fd, fdrec *r) {
    ht_remove(b, r->rd_ud, fd, OP_RD);
    r->rd = RD_NONE;
    (void)sync_interest(b, fd, r);
}

static void disarm_wr(ug__backend *b, int fd, fdrec *r) {
    ht_remove(b, r->wr_ud, fd, OP_WR);
    r->wr = 0;
    r->iov = NULL;
    (void)sync_interest(b, fd, r);
}

static int arm(ug__backend *b, int fd, uint64_t ud, uint32_t op, uint8_t rd_kind,
               const struct iovec *iov, unsigned iovcnt) {
    fdrec *r = fd_rec(b, fd);
    if (!r) return fd < 0 ? -EBADF : -ENOMEM;
    if (op == OP_RD ? r->rd != RD_NONE : r->wr != 0) return -EBUSY;
    if (!ht_insert(b, ud, fd, op)) return -ENOMEM;
    if (op == OP_RD) {
        r->rd = rd_kind;
        r->rd_ud = ud;
    } else {
        r->wr = 1;
        r->wr_ud = ud;
        r->iov = iov;
        r->iovcnt = iovcnt;
    }
    int rc = sync_interest(b, fd, r);
    if (rc < 0) {
        ht_remove(b, ud, fd, op);
        if (op == OP_RD)
            r->rd = RD_NONE;
        else
            r->wr = 0;
    }
    return rc;
}

/* ---- create / destroy ------------------------------------------------------------------ */

static void ep_destroy(ug__backend *b);

static int ep_create(ug__backend **out, const ug__backend_params *p) {
    uint32_t entries = p && p->ring_entries ? p->ring_entries : 256;
    uint32_t nbufs = p && p->recv_buffers ? p->recv_buffers : 1024;
    uint32_t bsz = p && p->recv_buffer_size ? p->recv_buffer_size : 4096;
    *out = NULL;
    if (nbufs > 65536 || bsz > (1u << 30)) return -EINVAL;
    ug__backend *b = ug__calloc(1, sizeof *b);
    if (!b) return -ENOMEM;
    b->epfd = b->efd = -1;
    b->nbufs = nbufs;
    b->buf_size = bsz;
    int r = 0;
    b->maxev = entries < 64 ? 64 : entries > MAX_EVENTS ? MAX_EVENTS : (int)entries;
    b->evs = ug__calloc((size_t)b->maxev, sizeof *b->evs);
    b->free_ids = ug__malloc((size_t)nbufs * sizeof *b->free_ids);
    if (!b->evs || !b->free_ids || !q_reserve(b, 64)) {
        r = -ENOMEM;
        goto fail;
    }
    b->bufs_len = (size_t)nbufs * bsz;
    void *m = mmap(NULL, b->bufs_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        r = -errno;
        goto fail;
    }
    b->bufs = m;
    for (uint32_t i = 0; i < nbufs; i++) b->free_ids[i] = nbufs - 1 - i; /* pop 0 first */
    b->nfree = nbufs;
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    b->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (b->epfd < 0 || b->efd < 0) {
        r = -errno;
        goto fail;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.fd = b->efd;
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->efd, &ev) < 0) {
        r = -errno;
        goto fail;
    }
    *out = b;
    return 0;
fail:
    ep_destroy(b);
    return r;
}

static void ep_destroy(ug__backend *b) {
    if (!b) return;
    if (b->epfd >= 0) close(b->epfd);
    if (b->efd >= 0) close(b->efd);
    if (b->bufs) munmap(b->bufs, b->bufs_len);
    free(b->free_ids);
    free(b->evs);
    free(b->fds);
    free(b->ht);
    for (uint32_t i = 0; i < b->timers.n; i++) free(timer_of(b->timers.v[i]));
    ug__timer_heap_free(&b->timers);
    while (b->timer_free) {
        ep_tmr *n = b->timer_free->free_next;
        free(b->timer_free);
        b->timer_free = n;
    }
    free(b->q);
    free(b);
}

/* ---- operations ------------------------------------------------------------------------ */

static int ep_accept(ug__backend *b, int lfd, uint64_t ud) {
    /* accept4 runs until EAGAIN: the listener must not block. */
    int fl = fcntl(lfd, F_GETFL);
    if (fl < 0) return -errno;
    if (!(fl & O_NONBLOCK) && fcntl(lfd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
    return arm(b, lfd, ud, OP_RD, RD_ACCEPT, NULL, 0);
}

static int ep_recv(ug__backend *b, int fd, uint64_t ud) {
    return arm(b, fd, ud, OP_RD, RD_RECV, NULL, 0);
}

static void ep_recv_release(ug__backend *b, uint32_t buf_id) {
    if (buf_id < b->nbufs && b->nfree < b->nbufs) b->free_ids[b->nfree++] = buf_id;
}

static ssize_t do_sendmsg(int fd, const struct iovec *iov, unsigned iovcnt) {
    if (iovcnt == 1) return send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = iovcnt;
    return sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static inline bool would_block(int e) {
    return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

static int ep_send(ug__backend *b, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t ud) {
    fdrec *r = fd_rec(b, fd);
    if (!r) return fd < 0 ? -EBADF : -ENOMEM;
    if (r->wr) return -EBUSY;
    if (!q_reserve(b, 1)) return -ENOMEM;
    /* Optimistic attempt: most sends fit in the socket buffer. The completion still goes
     * through the FIFO, never through a callback from inside send(). */
    ssize_t n = iovcnt ? do_sendmsg(fd, iov, iovcnt) : 0;
    if (n >= 0 || !would_block(errno)) {
        q_push(b, ud, n >= 0 ? (int32_t)n : -errno, 0, NULL, 0);
        return 0;
    }
    return arm(b, fd, ud, OP_WR, 0, iov, iovcnt);
}

static int ep_timer_cancel(ug__backend *b, uint64_t ud);

static int ep_cancel(ug__backend *b, uint64_t target_ud) {
    int64_t i;
    while ((i = ht_find(b, target_ud, -1, 0)) >= 0) {
        if (!q_reserve(b, 1)) return -ENOMEM;
        hent e = b->ht[i];
        ht_remove_at(b, (uint32_t)i);
        fdrec *r = &b->fds[e.fd];
        if (e.op == OP_RD) {
            r->rd = RD_NONE;
        } else {
            r->wr = 0;
            r->iov = NULL;
        }
        (void)sync_interest(b, e.fd, r);
        q_push(b, target_ud, -ECANCELED, 0, NULL, 0);
    }
    /* ASYNC_CANCEL matches timeouts too. */
    return ep_timer_cancel(b, target_ud);
}

static int ep_timer(ug__backend *b, uint64_t deadline_ns, uint64_t ud) {
    ep_tmr *et = b->timer_free;
    if (et)
        b->timer_free = et->free_next;
    else if (!(et = ug__malloc(sizeof *et)))
        return -ENOMEM;
    ug__timer_init(&et->t, NULL);
    et->ud = ud;
    if (ug__timer_start(&b->timers, &et->t, deadline_ns)) {
        timer_put(b, et);
        return -ENOMEM;
    }
    return 0;
}

static int ep_timer_cancel(ug__backend *b, uint64_t ud) {
    for (uint32_t i = 0; i < b->timers.n; i++) {
        ep_tmr *et = timer_of(b->timers.v[i]);
        if (et->ud != ud) continue;
        if (!q_reserve(b, 1)) return -ENOMEM;
        ug__timer_stop(&b->timers, &et->t);
        timer_put(b, et);
        q_push(b, ud, -ECANCELED, 0, NULL, 0);
        return 0;
    }
    return 0;
}

/* ---- readiness -> completions ---------------------------------------------------------- */

static void on_accept_ready(ug__backend *b, int lfd, fdrec *r) {
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (!q_reserve(b, 1)) return; /* level-triggered: retried on the next wait() */
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            q_push(b, r->rd_ud, fd, UG__CF_MORE, NULL, 0);
            continue;
        }
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK) return;
        if (e == EINTR) continue;
        /* Like io_uring's multishot accept: any error ends the operation. */
        q_push(b, r->rd_ud, -e, 0, NULL, 0);
        disarm_rd(b, lfd, r);
        return;
    }
}

static void on_recv_ready(ug__backend *b, int fd, fdrec *r) {
    if (!q_reserve(b, 1)) return;
    if (!b->nfree) {
        q_push(b, r->rd_ud, -ENOBUFS, 0, NULL, 0);
        disarm_rd(b, fd, r);
        return;
    }
    uint32_t id = b->free_ids[--b->nfree];
    char *buf = b->bufs + (size_t)id * b->buf_size;
    ssize_t n = recv(fd, buf, b->buf_size, MSG_DONTWAIT);
    if (n > 0) {
        q_push(b, r->rd_ud, (int32_t)n, UG__CF_MORE | UG__CF_BUFFER, buf, id);
        return;
    }
    int e = n < 0 ? errno : 0;
    b->free_ids[b->nfree++] = id;
    if (n < 0 && would_block(e)) return;
    q_push(b, r->rd_ud, n == 0 ? 0 : -e, 0, NULL, 0); /* EOF or error: the end */
    disarm_rd(b, fd, r);
}

static void on_send_ready(ug__backend *b, int fd, fdrec *r) {
    if (!q_reserve(b, 1)) return;
    ssize_t n = do_sendmsg(fd, r->iov, r->iovcnt);
    if (n < 0 && would_block(errno)) return;
    q_push(b, r->wr_ud, n >= 0 ? (int32_t)n : -errno, 0, NULL, 0);
    disarm_wr(b, fd, r);
}

static int do_epoll_wait(ug__backend *b, int64_t timeout_ns) {
    int n;
    if (timeout_ns <= 0) {
        n = epoll_wait(b->epfd, b->evs, b->maxev, timeout_ns < 0 ? -1 : 0);
    } else {
        n = -1;
        errno = ENOSYS;
        if (!b->no_pwait2) {
            struct timespec ts = {.tv_sec = timeout_ns / 1000000000,
                                  .tv_nsec = timeout_ns % 1000000000};
            n = epoll_pwait2(b->epfd, b->evs, b->maxev, &ts, NULL);
            if (n < 0 && errno == ENOSYS) b->no_pwait2 = true;
        }
        if (b->no_pwait2) {
            int64_t ms = (timeout_ns + 999999) / 1000000; /* round up: never early */
            n = epoll_wait(b->epfd, b->evs, b->maxev, ms > 0x7fffffff ? 0x7fffffff : (int)ms);
        }
    }
    if (n < 0) return errno == EINTR ? 0 : -errno;
    return n;
}

static int ep_wait(ug__backend *b, int64_t timeout_ns, uint32_t batch, ug__completion_cb cb,
                   void *ctx) {
    (void)batch; /* epoll_wait returns at the first ready event: nothing to batch on */
    int64_t t = timeout_ns;
    if (b->q_len) {
        t = 0;
    } else if (b->timers.n) {
        uint64_t now = now_ns(), d = ug__timer_next(&b->timers);
        int64_t dt = d > now ? (int64_t)(d - now) : 0;
        if (t < 0 || dt < t) t = dt;
    }
    int n = do_epoll_wait(b, t);
    if (n < 0) return n;
    for (int i = 0; i < n; i++) {
        uint32_t ev = b->evs[i].events;
        int fd = b->evs[i].data.fd;
        if (fd == b->efd) {
            uint64_t v;
            ssize_t rd = read(b->efd, &v, sizeof v);
            (void)rd;
            continue;
        }
        if ((uint32_t)fd >= b->nfds) continue;
        fdrec *r = &b->fds[fd];
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            if (r->rd == RD_ACCEPT)
                on_accept_ready(b, fd, r);
            else if (r->rd == RD_RECV)
                on_recv_ready(b, fd, r);
        }
        if (r->wr && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) on_send_ready(b, fd, r);
    }
    if (b->timers.n) {
        uint64_t now = now_ns();
        while (b->timers.n && ug__timer_next(&b->timers) <= now && q_reserve(b, 1)) {
            ep_tmr *et = timer_of(b->timers.v[0]);
            uint64_t ud = et->ud;
            ug__timer_stop(&b->timers, &et->t);
            timer_put(b, et);
            q_push(b, ud, 0, 0, NULL, 0);
        }
    }
    /* Deliver what is queued now; callbacks may queue more (send, cancel): next wait(). */
    uint32_t k = b->q_len;
    int delivered = 0;
    while (k--) {
        ug__completion c = b->q[b->q_head];
        b->q_head = (b->q_head + 1) & (b->q_cap - 1);
        b->q_len--;
        cb(ctx, &c);
        delivered++;
    }
    return delivered;
}

static void ep_wake(ug__backend *b) {
    uint64_t one = 1;
    ssize_t w = write(b->efd, &one, sizeof one); /* async-signal-safe */
    (void)w;
}

static int ep_shutdown(ug__backend *b, int fd, int how) {
    (void)b;
    return shutdown(fd, how) < 0 ? -errno : 0;
}

static int ep_close(ug__backend *b, int fd) {
    (void)b;
    return close(fd) < 0 ? -errno : 0;
}

const ug__backend_ops ug__backend_epoll = {
    .name = "epoll",
    .create = ep_create,
    .destroy = ep_destroy,
    .accept = ep_accept,
    .recv = ep_recv,
    .recv_release = ep_recv_release,
    .send = ep_send,
    .cancel = ep_cancel,
    .timer = ep_timer,
    .timer_cancel = ep_timer_cancel,
    .wait = ep_wait,
    .wake = ep_wake,
    .shutdown = ep_shutdown,
    .close = ep_close,
};
