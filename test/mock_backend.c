#include "mock_backend.h"

#include "testutil.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_OPS 8192
#define MAX_ITEMS 4096
#define MAX_BUFS 1024
#define MAX_ERRORS 64
#define LOG_CAP (64 * 1024)
#define SYNC_TIMEOUT_MS 2000
#define JOIN_TIMEOUT_MS 5000

typedef struct item {
    uint64_t seq;
    int barrier;
    ug__completion c;
    char *data; /* recv bytes (moved into a provided buffer on delivery) */
} item;

static struct mock {
    pthread_mutex_t mu;
    pthread_cond_t loop_cv; /* the loop waits for items */
    pthread_cond_t test_cv; /* the test waits for idle / done */

    mock_op ops[MAX_OPS];
    unsigned nops;

    item q[MAX_ITEMS];
    unsigned qhead, qlen;
    uint64_t qseq, consumed_seq, idle_at;
    int idle, hold, wake;

    struct {
        char *p;
        int out;
    } bufs[MAX_BUFS];

    int auto_send, auto_cancel, wire;
    int fail_wait;  /* the next wait() returns this error */
    int fail_recv;  /* the next recv() returns this error */
    int fail_timer; /* the next timer() returns this error */

    char errors[MAX_ERRORS][160];
    unsigned nerrors;

    char log[LOG_CAP];
    size_t log_len;

    pthread_t thread;
    int running, done, rc;
    ug_report report;
    int have_owner;
    pthread_t owner;
} m = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .loop_cv = PTHREAD_COND_INITIALIZER,
    .test_cv = PTHREAD_COND_INITIALIZER,
};

struct ug__backend {
    int dummy;
};

static void err_locked(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void err_locked(const char *fmt, ...) {
    if (m.nerrors >= MAX_ERRORS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m.errors[m.nerrors], sizeof m.errors[0], fmt, ap);
    va_end(ap);
    fprintf(stderr, "mock: contract violation: %s\n", m.errors[m.nerrors]);
    m.nerrors++;
}

static void deadline_after(struct timespec *ts, int64_t ns) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ns += ts->tv_nsec;
    ts->tv_sec += (time_t)(ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
}

static void init_conds(void) {
    static int done;
    if (done) return;
    done = 1;
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_destroy(&m.loop_cv);
    pthread_cond_destroy(&m.test_cv);
    pthread_cond_init(&m.loop_cv, &a);
    pthread_cond_init(&m.test_cv, &a);
    pthread_condattr_destroy(&a);
}

void mock_reset(void) {
    init_conds();
    pthread_mutex_lock(&m.mu);
    for (unsigned i = 0; i < m.nops; i++) free(m.ops[i].data);
    memset(m.ops, 0, sizeof m.ops);
    m.nops = 0;
    for (unsigned i = 0; i < m.qlen; i++) free(m.q[(m.qhead + i) % MAX_ITEMS].data);
    m.qhead = m.qlen = 0;
    m.qseq = m.consumed_seq = m.idle_at = 0;
    m.idle = m.hold = m.wake = 0;
    for (unsigned i = 0; i < MAX_BUFS; i++) {
        free(m.bufs[i].p);
        m.bufs[i].p = NULL;
        m.bufs[i].out = 0;
    }
    m.auto_send = m.auto_cancel = 0;
    m.wire = 1;
    m.fail_wait = 0;
    m.fail_recv = 0;
    m.fail_timer = 0;
    m.nerrors = 0;
    m.log_len = 0;
    m.log[0] = 0;
    m.running = m.done = 0;
    m.rc = 0;
    memset(&m.report, 0, sizeof m.report);
    m.have_owner = 0;
    pthread_mutex_unlock(&m.mu);
}

void mock_auto(int sends, int cancels) {
    pthread_mutex_lock(&m.mu);
    m.auto_send = sends;
    m.auto_cancel = cancels;
    pthread_mutex_unlock(&m.mu);
}

void mock_fail_wait(int err) {
    pthread_mutex_lock(&m.mu);
    m.fail_wait = err;
    pthread_cond_broadcast(&m.loop_cv);
    pthread_mutex_unlock(&m.mu);
}

void mock_fail_recv(int err) {
    pthread_mutex_lock(&m.mu);
    m.fail_recv = err;
    pthread_mutex_unlock(&m.mu);
}

void mock_fail_timer(int err) {
    pthread_mutex_lock(&m.mu);
    m.fail_timer = err;
    pthread_mutex_unlock(&m.mu);
}

void mock_wire(int on) {
    pthread_mutex_lock(&m.mu);
    m.wire = on;
    pthread_mutex_unlock(&m.mu);
}

/* ---------------------------------------------------------------- queue ---- */

static uint64_t push_locked(const item *it) {
    if (m.qlen == MAX_ITEMS) {
        fprintf(stderr, "mock: completion queue full\n");
        abort();
    }
    item *d = &m.q[(m.qhead + m.qlen++) % MAX_ITEMS];
    *d = *it;
    d->seq = ++m.qseq;
    pthread_cond_broadcast(&m.loop_cv);
    return d->seq;
}

/* The oldest operation with ud that has no final completion queued (accept/recv/send/timer). */
static mock_op *open_op_locked(uint64_t ud) {
    for (unsigned i = 0; i < m.nops; i++) {
        mock_op *o = &m.ops[i];
        if (o->ud != ud || o->final_queued) continue;
        if (o->kind == MK_CANCEL || o->kind == MK_TIMER_CANCEL) continue;
        return o;
    }
    return NULL;
}

static void complete_locked(uint64_t ud, int32_t res, uint32_t flags, char *data) {
    if (!(flags & UG__CF_MORE)) {
        mock_op *o = open_op_locked(ud);
        if (o) o->final_queued = 1;
    }
    item it = {0};
    it.c.ud = ud;
    it.c.res = res;
    it.c.flags = flags;
    it.data = data;
    push_locked(&it);
}

void mock_complete(uint64_t ud, int32_t res, uint32_t flags) {
    pthread_mutex_lock(&m.mu);
    complete_locked(ud, res, flags & ~UG__CF_BUFFER, NULL);
    pthread_mutex_unlock(&m.mu);
}

void mock_recv(uint64_t ud, const void *data, size_t len, uint32_t flags) {
    char *p = malloc(len ? len : 1);
    if (!p) abort();
    if (len) memcpy(p, data, len);
    pthread_mutex_lock(&m.mu);
    complete_locked(ud, (int32_t)len, flags | UG__CF_BUFFER, p);
    pthread_mutex_unlock(&m.mu);
}

void mock_recv_str(uint64_t ud, const char *s, uint32_t flags) {
    mock_recv(ud, s, strlen(s), flags);
}

mock_op *mock_pending_send(int fd) {
    pthread_mutex_lock(&m.mu);
    mock_op *r = NULL;
    for (unsigned i = 0; i < m.nops && !r; i++)
        if (m.ops[i].kind == MK_SEND && m.ops[i].fd == fd && !m.ops[i].final_queued) r = &m.ops[i];
    pthread_mutex_unlock(&m.mu);
    return r;
}

mock_op *mock_complete_send(int fd, int32_t res) {
    mock_op *o = mock_pending_send(fd);
    if (!o) return NULL;
    mock_complete(o->ud, res == MOCK_ALL ? (int32_t)o->len : res, 0);
    return o;
}

void mock_hold(void) {
    pthread_mutex_lock(&m.mu);
    m.hold = 1;
    pthread_mutex_unlock(&m.mu);
}

void mock_release(void) {
    pthread_mutex_lock(&m.mu);
    m.hold = 0;
    pthread_cond_broadcast(&m.loop_cv);
    pthread_mutex_unlock(&m.mu);
}

/* ---------------------------------------------------------------- backend ops ---- */

static void check_thread_locked(const char *what) {
    if (m.have_owner && !pthread_equal(m.owner, pthread_self()))
        err_locked("%s called from a thread other than the loop's", what);
}

static mock_op *record_locked(int kind, int fd, uint64_t ud) {
    if (m.nops == MAX_OPS) {
        fprintf(stderr, "mock: too many operations\n");
        abort();
    }
    mock_op *o = &m.ops[m.nops++];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->fd = fd;
    o->ud = ud;
    return o;
}

static int m_create(ug__backend **out, const ug__backend_params *p) {
    (void)p;
    static ug__backend be;
    *out = &be;
    return 0;
}

static void m_destroy(ug__backend *b) {
    (void)b;
}

static int m_accept(ug__backend *b, int lfd, uint64_t ud) {
    (void)b;
    pthread_mutex_lock(&m.mu);
    check_thread_locked("accept");
    if (UG__UD_RESERVED(ud))
        err_locked("accept with a reserved user_data %#llx", (unsigned long long)ud);
    for (unsigned i = 0; i < m.nops; i++)
        if (m.ops[i].kind == MK_ACCEPT && !m.ops[i].finished)
            err_locked("accept armed while another accept is armed");
    record_locked(MK_ACCEPT, lfd, ud);
    pthread_mutex_unlock(&m.mu);
    return 0;
}

static int m_recv(ug__backend *b, int fd, uint64_t ud) {
    (void)b;
    pthread_mutex_lock(&m.mu);
    check_thread_locked("recv");
    if (UG__UD_RESERVED(ud)) err_locked("recv with a reserved user_data");
    if (m.fail_recv) {
        int e = m.fail_recv;
        m.fail_recv = 0;
        pthread_mutex_unlock(&m.mu);
        return e;
    }
    for (unsigned i = 0; i < m.nops; i++)
        if (m.ops[i].kind == MK_RECV && m.ops[i].fd == fd && !m.ops[i].finished)
            err_locked("recv armed on fd %d while another recv is armed on it", fd);
    record_locked(MK_RECV, fd, ud);
    pthread_mutex_unlock(&m.mu);
    return 0;
}

static void m_recv_release(ug__backend *b, uint32_t id) {
    (void)b;
    pthread_mutex_lock(&m.mu);
    check_thread_locked("recv_release");
    if (id >= MAX_BUFS || !m.bufs[id].out) {
        err_locked("recv_release of buffer %u that is not out", id);
    } else {
        free(m.bufs[id].p);
        m.bufs[id].p = NULL;
        m.bufs[id].out = 0;
    }
    pthread_mutex_unlock(&m.mu);
}

static int m_send(ug__backend *b, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t ud) {
    (void)b;
    pthread_mutex_lock(&m.mu);
    check_thread_locked("send");
    if (UG__UD_RESERVED(ud)) err_locked("send with a reserved user_data");
    for (unsigned i = 0; i < m.nops; i++)
        if (m.ops[i].kind == MK_SEND && m.ops[i].fd == fd && !m.ops[i].finished)
            err_locked("send started on fd %d while another send is in flight on it", fd);
    if (iovcnt != 1) err_locked("send with %u iovecs (the mock checks only 1)", iovcnt);
    mock_op *o = record_locked(MK_SEND, fd, ud);
    size_t len = 0;
    for (unsigned i = 0; i < iovcnt; i++) len += iov[i].iov_len;
    o->data = malloc(len ? len : 1);
    if (!o->data) abort();
    size_t off = 0;
    for (unsigned i = 0; i < iovcnt; i++) {
        memcpy(o->data + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    o->len = len;
    o->mem = iovcnt ? iov[0].iov_base : NULL;
    if (len == 0) err_locked("send of 0 bytes on fd %d", fd);
    if (m.auto_send) complete_locked(ud, (int32_t)len, 0, NULL);
    pthread_mutex_unlock(&m.mu);
    return 0;
}

static int m_cancel(ug__backend *b, uint64_t target) {
    (void)b;
    pthread_mutex_lock(&m.mu);
    check_thread_locked("cancel");
    record_locked(MK_CANCEL, -1, target);
    for (unsigned i = 0; i + 1 < m.nops; i++) {
        mock_op *o = &m.ops[i];
        if (o->ud != target || o->kind == MK_CANCEL || o->kind == MK_TIMER_CANCEL) continue;
        o->cancelled = 1;
        if (m.auto_cancel && !o->final_queued) complete_locked(target, -ECANCELED, 0, NULL);
    }
    pthread_mutex_unlock(&m.mu);
    return 0;
}

static int m_timer(ug__backend *b, uint64_t deadline_ns, uint64_t ud) {
    (void)b;
    pthread_mutex_lock(&m.mu);
    check_thread_locked("timer");
    if (UG__UD_RESERVED(ud)) err_locked("timer with a reserved user_data");
    if (m.fail_timer) {
        int e = m.fail_timer;
        m.fail_timer = 0;
        pthread_mutex_unlock(&m.mu);
        return e;
    }
    for (unsigned i = 0; i < m.nops; i++)
        if (m.ops[i].kind == MK_TIMER && m.ops[i].ud == ud && !m.ops[i].finished)
            err_locked("a second timer with the same user_data");
    mock_op *o = record_locked(MK_TIMER, -1, ud);
    o->deadline_ns = deadline_ns;
    pthread_mutex_unlock(&m.mu);
    return 0;
}

static int m_timer_cancel(ug__backend *b, uint64_t ud) {
    (void)b;
    pthread_mutex_lock(&m.mu);
    check_thread_locked("timer_cancel");
    record_locked(MK_TIMER_CANCEL, -1, ud);
    for (unsigned i = 0; i + 1 < m.nops; i++) {
        mock_op *o = &m.ops[i];
        if (o->kind != MK_TIMER || o->ud != ud) continue;
        o->cancelled = 1;
        if (m.auto_cancel && !o->final_queued) complete_locked(ud, -ECANCELED, 0, NULL);
    }
    pthread_mutex_unlock(&m.mu);
    return 0;
}

static void m_wake(ug__backend *b) {
    (void)b;
    pthread_mutex_lock(&m.mu);
    m.wake = 1;
    pthread_cond_broadcast(&m.loop_cv);
    pthread_mutex_unlock(&m.mu);
}

/* The core closes a connection only when nothing is armed on it (the lifetime rule). */
static int m_close(ug__backend *b, int fd) {
    (void)b;
    pthread_mutex_lock(&m.mu);
    check_thread_locked("close");
    for (unsigned i = 0; i < m.nops; i++) {
        const mock_op *o = &m.ops[i];
        if ((o->kind == MK_RECV || o->kind == MK_SEND || o->kind == MK_ACCEPT) && o->fd == fd &&
            !o->finished)
            err_locked("close of fd %d with an operation armed on it", fd);
    }
    pthread_mutex_unlock(&m.mu);
    return close(fd) < 0 ? -errno : 0;
}

static int m_shutdown(ug__backend *b, int fd, int how) {
    (void)b;
    return shutdown(fd, how) < 0 ? -errno : 0;
}

/* Deliver one queued completion: bookkeeping under the lock, the callback outside it. */
static void deliver(item *it, ug__completion_cb cb, void *ctx) {
    ug__completion c = it->c;
    mock_op *send_op = NULL;
    pthread_mutex_lock(&m.mu);
    if (it->data) { /* a provided buffer */
        unsigned id = 0;
        while (id < MAX_BUFS && (m.bufs[id].out || m.bufs[id].p)) id++;
        if (id == MAX_BUFS) {
            fprintf(stderr, "mock: out of receive buffers (the core leaks them)\n");
            abort();
        }
        m.bufs[id].p = it->data;
        m.bufs[id].out = 1;
        c.data = it->data;
        c.buf_id = id;
        it->data = NULL;
    }
    /* Find the operation this completes: the oldest unfinished one with this ud. */
    mock_op *o = NULL;
    for (unsigned i = 0; i < m.nops && !o; i++) {
        mock_op *x = &m.ops[i];
        if (x->ud == c.ud && !x->finished && x->kind != MK_CANCEL && x->kind != MK_TIMER_CANCEL)
            o = x;
    }
    if (o && !(c.flags & UG__CF_MORE)) o->finished = 1;
    if (o && o->kind == MK_SEND) {
        send_op = o;
        if (memcmp(o->mem, o->data, o->len))
            err_locked("send buffer on fd %d modified while the send was in flight", o->fd);
        if (c.res > (int32_t)o->len) err_locked("test completed a send with too many bytes");
    }
    int wire = m.wire;
    pthread_mutex_unlock(&m.mu);
    if (send_op && c.res > 0 && wire) {
        ssize_t n = send(send_op->fd, send_op->data, (size_t)c.res, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n != c.res) {
            pthread_mutex_lock(&m.mu);
            err_locked("writing a completed send to fd %d: %zd of %d (%s)", send_op->fd, n, c.res,
                       n < 0 ? strerror(errno) : "short");
            pthread_mutex_unlock(&m.mu);
        }
    }
    cb(ctx, &c);
}

static int m_wait(ug__backend *b, int64_t timeout_ns, uint32_t want, ug__completion_cb cb,
                  void *ctx) {
    (void)b;
    (void)want;
    pthread_mutex_lock(&m.mu);
    if (!m.have_owner) {
        m.have_owner = 1;
        m.owner = pthread_self();
    }
    check_thread_locked("wait");
    if ((m.qlen == 0 || m.hold) && !m.wake && !m.fail_wait && timeout_ns != 0) {
        struct timespec dl;
        if (timeout_ns > 0) deadline_after(&dl, timeout_ns);
        m.idle = 1;
        m.idle_at = m.consumed_seq;
        pthread_cond_broadcast(&m.test_cv);
        while ((m.qlen == 0 || m.hold) && !m.wake && !m.fail_wait) {
            if (timeout_ns < 0) {
                pthread_cond_wait(&m.loop_cv, &m.mu);
            } else if (pthread_cond_timedwait(&m.loop_cv, &m.mu, &dl) == ETIMEDOUT) {
                break;
            }
        }
        m.idle = 0;
    }
    if (m.fail_wait) {
        int e = m.fail_wait;
        m.fail_wait = 0;
        pthread_mutex_unlock(&m.mu);
        return e;
    }
    m.wake = 0;
    unsigned n = m.hold ? 0 : m.qlen;
    item *batch = n ? malloc(n * sizeof *batch) : NULL;
    if (n && !batch) abort();
    for (unsigned i = 0; i < n; i++) {
        batch[i] = m.q[m.qhead];
        m.qhead = (m.qhead + 1) % MAX_ITEMS;
        m.qlen--;
        m.consumed_seq = batch[i].seq;
    }
    pthread_mutex_unlock(&m.mu);
    int delivered = 0;
    for (unsigned i = 0; i < n; i++) {
        if (batch[i].barrier) continue;
        deliver(&batch[i], cb, ctx);
        delivered++;
    }
    free(batch);
    return delivered;
}

const ug__backend_ops mock_backend_ops = {
    .name = "mock",
    .create = m_create,
    .destroy = m_destroy,
    .accept = m_accept,
    .recv = m_recv,
    .recv_release = m_recv_release,
    .send = m_send,
    .cancel = m_cancel,
    .timer = m_timer,
    .timer_cancel = m_timer_cancel,
    .wait = m_wait,
    .wake = m_wake,
    .shutdown = m_shutdown,
    .close = m_close,
};

/* ---------------------------------------------------------------- running ---- */

int mock_server_create(ug_server **srv, ug_config *cfg) {
    cfg->log = mock_log;
    cfg->log_user = NULL;
    return ug__server_create_ops(srv, cfg, &mock_backend_ops);
}

static void *run_thread(void *arg) {
    ug_server *srv = arg;
    ug_report rep;
    memset(&rep, 0, sizeof rep);
    int rc = ug_server_run(srv, &rep);
    pthread_mutex_lock(&m.mu);
    m.rc = rc;
    m.report = rep;
    m.done = 1;
    pthread_cond_broadcast(&m.test_cv);
    pthread_mutex_unlock(&m.mu);
    return NULL;
}

void mock_run(ug_server *srv) {
    pthread_mutex_lock(&m.mu);
    m.running = 1;
    m.done = 0;
    pthread_mutex_unlock(&m.mu);
    if (pthread_create(&m.thread, NULL, run_thread, srv)) abort();
    mock_sync();
}

int mock_sync(void) {
    struct timespec dl;
    deadline_after(&dl, (int64_t)SYNC_TIMEOUT_MS * 1000000);
    pthread_mutex_lock(&m.mu);
    item it = {0};
    it.barrier = 1;
    uint64_t s = push_locked(&it);
    int rc = 0;
    while (!m.done && !(m.idle && m.idle_at >= s)) {
        if (pthread_cond_timedwait(&m.test_cv, &m.mu, &dl) == ETIMEDOUT) {
            rc = -1;
            break;
        }
    }
    if (m.done) rc = 1;
    pthread_mutex_unlock(&m.mu);
    if (rc < 0) fprintf(stderr, "mock: sync timed out (the loop is busy or stuck)\n");
    return rc;
}

int mock_done(void) {
    pthread_mutex_lock(&m.mu);
    int d = m.done;
    pthread_mutex_unlock(&m.mu);
    return d;
}

int mock_join(ug_report *rep) {
    struct timespec dl;
    deadline_after(&dl, (int64_t)JOIN_TIMEOUT_MS * 1000000);
    pthread_mutex_lock(&m.mu);
    if (!m.running) {
        pthread_mutex_unlock(&m.mu);
        return -1;
    }
    while (!m.done) {
        if (pthread_cond_timedwait(&m.test_cv, &m.mu, &dl) == ETIMEDOUT) {
            pthread_mutex_unlock(&m.mu);
            fprintf(stderr, "mock: ug_server_run did not return: giving up\n");
            fflush(NULL);
            _exit(1);
        }
    }
    pthread_mutex_unlock(&m.mu);
    pthread_join(m.thread, NULL);
    pthread_mutex_lock(&m.mu);
    m.running = 0;
    int rc = m.rc;
    if (rep) *rep = m.report;
    pthread_mutex_unlock(&m.mu);
    return rc;
}

/* Complete whatever is cancelled (with -ECANCELED) or in flight (sends, in full). */
static void finish_outstanding(void) {
    pthread_mutex_lock(&m.mu);
    for (unsigned i = 0; i < m.nops; i++) {
        mock_op *o = &m.ops[i];
        if (o->final_queued || o->finished) continue;
        if (o->kind == MK_SEND)
            complete_locked(o->ud, o->cancelled ? -ECANCELED : (int32_t)o->len, 0, NULL);
        else if ((o->kind == MK_ACCEPT || o->kind == MK_RECV || o->kind == MK_TIMER) &&
                 o->cancelled)
            complete_locked(o->ud, -ECANCELED, 0, NULL);
    }
    pthread_mutex_unlock(&m.mu);
}

int mock_stop(ug_server *srv, ug_report *rep) {
    pthread_mutex_lock(&m.mu);
    int running = m.running, done = m.done;
    pthread_mutex_unlock(&m.mu);
    if (!running) return -1;
    if (!done) {
        mock_release();
        mock_auto(1, 1);
        mock_wire(0);
        ug_shutdown_opts o = {.immediate = 1};
        ug_server_shutdown(srv, &o);
        for (int i = 0; i < 20 && mock_sync() == 0; i++) finish_outstanding();
    }
    return mock_join(rep);
}

/* ---------------------------------------------------------------- queries ---- */

unsigned mock_nops(void) {
    pthread_mutex_lock(&m.mu);
    unsigned n = m.nops;
    pthread_mutex_unlock(&m.mu);
    return n;
}

mock_op *mock_op_at(unsigned i) {
    pthread_mutex_lock(&m.mu);
    mock_op *o = i < m.nops ? &m.ops[i] : NULL;
    pthread_mutex_unlock(&m.mu);
    return o;
}

mock_op *mock_last(int kind, int fd, unsigned from) {
    pthread_mutex_lock(&m.mu);
    mock_op *r = NULL;
    for (unsigned i = m.nops; i > from && !r; i--)
        if (m.ops[i - 1].kind == kind && (fd < 0 || m.ops[i - 1].fd == fd)) r = &m.ops[i - 1];
    pthread_mutex_unlock(&m.mu);
    return r;
}

unsigned mock_count(int kind, int fd, unsigned from) {
    pthread_mutex_lock(&m.mu);
    unsigned n = 0;
    for (unsigned i = from; i < m.nops; i++)
        if (m.ops[i].kind == kind && (fd < 0 || m.ops[i].fd == fd)) n++;
    pthread_mutex_unlock(&m.mu);
    return n;
}

unsigned mock_cancels_of(uint64_t ud) {
    pthread_mutex_lock(&m.mu);
    unsigned n = 0;
    for (unsigned i = 0; i < m.nops; i++)
        if (m.ops[i].kind == MK_CANCEL && m.ops[i].ud == ud) n++;
    pthread_mutex_unlock(&m.mu);
    return n;
}

unsigned mock_buffers_out(void) {
    pthread_mutex_lock(&m.mu);
    unsigned n = 0;
    for (unsigned i = 0; i < MAX_BUFS; i++) n += m.bufs[i].out != 0;
    pthread_mutex_unlock(&m.mu);
    return n;
}

unsigned mock_nerrors(void) {
    pthread_mutex_lock(&m.mu);
    unsigned n = m.nerrors;
    pthread_mutex_unlock(&m.mu);
    return n;
}

const char *mock_error(unsigned i) {
    return i < m.nerrors ? m.errors[i] : "";
}

void mock_log(void *user, ug_log_level lvl, const char *msg) {
    (void)user;
    (void)lvl;
    pthread_mutex_lock(&m.mu);
    size_t n = strlen(msg);
    if (m.log_len + n + 2 < LOG_CAP) {
        memcpy(m.log + m.log_len, msg, n);
        m.log_len += n;
        m.log[m.log_len++] = '\n';
        m.log[m.log_len] = 0;
    }
    pthread_mutex_unlock(&m.mu);
}

int mock_log_has(const char *needle) {
    pthread_mutex_lock(&m.mu);
    int r = strstr(m.log, needle) != NULL;
    pthread_mutex_unlock(&m.mu);
    return r;
}

/* ---------------------------------------------------------------- connections ---- */

int mock_pair(mock_conn *mc) {
    int sv[2];
    memset(mc, 0, sizeof *mc);
    mc->fd = mc->peer = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -1;
    mc->fd = sv[0];
    mc->peer = sv[1];
    struct stat st;
    if (fstat(mc->fd, &st) < 0) return -1;
    mc->dev = st.st_dev;
    mc->ino = st.st_ino;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(mc->peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return 0;
}

int mock_accept(mock_conn *mc, uint32_t flags) {
    if (mock_pair(mc)) return -1;
    unsigned from = mock_nops();
    mock_complete(MOCK_ACCEPT_UD, mc->fd, flags);
    if (mock_sync() != 0) return -1;
    mock_op *r = mock_last(MK_RECV, mc->fd, from);
    if (!r) return -1;
    mc->recv_ud = r->ud;
    return 0;
}

int mock_fd_open(const mock_conn *mc) {
    struct stat st;
    if (fstat(mc->fd, &st) < 0) return 0;
    return st.st_dev == mc->dev && st.st_ino == mc->ino;
}

int mock_peer_eof(const mock_conn *mc) {
    char b;
    ssize_t n = recv(mc->peer, &b, 1, MSG_DONTWAIT | MSG_PEEK);
    if (n == 0) return 1;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return 1;
    return 0;
}

int mock_peer_pending(const mock_conn *mc) {
    static char b[1 << 16];
    ssize_t n = recv(mc->peer, b, sizeof b, MSG_DONTWAIT | MSG_PEEK);
    return n < 0 ? 0 : (int)n;
}

void mock_conn_close(mock_conn *mc) {
    if (mc->peer >= 0) {
        tu_forget(mc->peer);
        close(mc->peer);
    }
    mc->peer = -1;
}

/* ---------------------------------------------------------------- loop-thread calls ---- */

int mock_on_loop(ug_server *srv, ug_post_fn fn, void *user) {
    int rc = ug_server_post(srv, fn, user);
    if (rc) return rc;
    return mock_sync();
}

static void stats_fn(ug_server *srv, void *user) {
    ug_server_stats(srv, user);
}

void mock_stats(ug_server *srv, ug_stats *out) {
    memset(out, 0, sizeof *out);
    if (mock_done()) {
        ug_server_stats(srv, out);
        return;
    }
    mock_on_loop(srv, stats_fn, out);
}

/* ---------------------------------------------------------------- parsing ---- */

static const char *find_crlf(const char *p, const char *end) {
    for (; p + 1 < end; p++)
        if (p[0] == '\r' && p[1] == '\n') return p;
    return NULL;
}

long mock_parse_resp(const char *buf, size_t len, int no_body, int eof_delimited, mock_resp *r) {
    memset(r, 0, sizeof *r);
    r->clen = -1;
    const char *end = buf + len, *hend = NULL;
    for (const char *p = buf; p + 3 < end; p++)
        if (!memcmp(p, "\r\n\r\n", 4)) {
            hend = p + 4;
            break;
        }
    if (!hend) return -1;
    size_t hl = (size_t)(hend - buf);
    if (hl >= sizeof r->head) return -1;
    memcpy(r->head, buf, hl);
    r->head[hl] = 0;
    if (sscanf(r->head, "HTTP/1.%d %d", &r->minor, &r->status) != 2) return -1;
    const char *cl = mock_resp_header(r, "Content-Length");
    if (cl) r->clen = strtol(cl, NULL, 10);
    const char *te = mock_resp_header(r, "Transfer-Encoding");
    r->chunked = te && !strcasecmp(te, "chunked");
    r->body = malloc(1);
    if (!r->body) abort();
    r->body[0] = 0;
    int nobody = no_body || r->status == 204 || r->status == 304 || r->status / 100 == 1;
    const char *p = hend;
    if (nobody) return (long)hl;
    if (r->chunked) {
        for (;;) {
            const char *e = find_crlf(p, end);
            if (!e) return -1;
            char *x;
            unsigned long sz = strtoul(p, &x, 16);
            if (x == p || x != e) return -1;
            p = e + 2;
            if ((size_t)(end - p) < sz + 2 || p[sz] != '\r' || p[sz + 1] != '\n') return -1;
            char *nb = realloc(r->body, r->body_len + sz + 1);
            if (!nb) abort();
            r->body = nb;
            memcpy(r->body + r->body_len, p, sz);
            r->body_len += sz;
            r->body[r->body_len] = 0;
            p += sz + 2;
            if (sz == 0) break;
        }
        return (long)(p - buf);
    }
    size_t blen;
    if (r->clen >= 0) {
        blen = (size_t)r->clen;
        if ((size_t)(end - p) < blen) return -1;
    } else if (eof_delimited) {
        blen = (size_t)(end - p);
    } else {
        return -1;
    }
    free(r->body);
    r->body = malloc(blen + 1);
    if (!r->body) abort();
    memcpy(r->body, p, blen);
    r->body[blen] = 0;
    r->body_len = blen;
    return (long)(p + blen - buf);
}

void mock_resp_free(mock_resp *r) {
    free(r->body);
    r->body = NULL;
}

static const char *header_at(const mock_resp *r, const char *name, int nth) {
    static char val[1024];
    size_t nl = strlen(name);
    int seen = 0;
    for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p, "\r\n")) {
        p += 2;
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            if (seen++ < nth) continue;
            const char *v = p + nl + 1;
            while (*v == ' ') v++;
            const char *e = strstr(v, "\r\n");
            size_t vl = e ? (size_t)(e - v) : strlen(v);
            if (vl >= sizeof val) vl = sizeof val - 1;
            memcpy(val, v, vl);
            val[vl] = 0;
            return val;
        }
    }
    return NULL;
}

const char *mock_resp_header(const mock_resp *r, const char *name) {
    return header_at(r, name, 0);
}

int mock_resp_header_count(const mock_resp *r, const char *name) {
    int n = 0;
    while (header_at(r, name, n)) n++;
    return n;
}

void mock_base_cfg(ug_config *cfg) {
    ug_config_init(cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 0;
    cfg->idle_timeout_ms = 60000;
    cfg->read_header_timeout_ms = 60000;
    cfg->body_timeout_ms = 60000;
    cfg->write_timeout_ms = 60000;
    cfg->linger_ms = 60000;
}
