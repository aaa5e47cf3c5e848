/*
 * Backend tests: one set of test bodies run against every backend (epoll always, io_uring
 * when the kernel lets us create a ring), through the ug__backend_ops table only, on real
 * loopback TCP sockets. Every wait is bounded (PUMP_UNTIL deadlines, tu_main's watchdog).
 */
#include "backend.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const ug__backend_ops *OPS; /* the backend the current suite runs on */

/* user_data as the core builds them: an op type (1..10) in the top nibble. */
#define UD(type, n) (((uint64_t)(type) << 60) | (uint64_t)(n))
#define T_ACCEPT 1
#define UD_ACC UD(T_ACCEPT, 7)
#define UD_RECV UD(2, 9)
#define UD_SEND UD(3, 9)
#define UD_TIMER UD(4, 1)

#define MS 1000000LL /* ns */

/* ---- completion collector ------------------------------------------------------------- */

#define MAXC 4096
static ug__completion got[MAXC]; /* completions since the last reset (data not valid) */
static int ngot;
static int auto_release; /* give buffers back from the callback */
static char sink[1 << 16];
static size_t nsink; /* received bytes, in order, from every recv */
static int acc_fds[512];
static int nacc; /* fds delivered by accepts (type T_ACCEPT), final completions included */

static void reset(void) {
    ngot = 0;
    nsink = 0;
    nacc = 0;
    auto_release = 1;
}

static void collect(void *ctx, const ug__completion *c) {
    ug__backend *b = ctx;
    CU_ASSERT_FALSE(UG__UD_RESERVED(c->ud)); /* internal completions never leak */
    if (ngot < MAXC) got[ngot++] = *c;
    if ((c->ud >> 60) == T_ACCEPT && c->res >= 0 && nacc < 512) acc_fds[nacc++] = c->res;
    if (c->flags & UG__CF_BUFFER) {
        CU_ASSERT_PTR_NOT_NULL(c->data);
        if (c->res > 0 && nsink + (size_t)c->res <= sizeof sink) {
            memcpy(sink + nsink, c->data, (size_t)c->res);
            nsink += (size_t)c->res;
        }
        if (auto_release) OPS->recv_release(b, c->buf_id);
    } else {
        CU_ASSERT(c->res <= 0 || (c->ud >> 60) != 2); /* recv data always has a buffer */
    }
}

static int wait_once(ug__backend *b, int64_t timeout_ns) {
    int r = OPS->wait(b, timeout_ns, 1, collect, b);
    CU_ASSERT(r >= 0);
    return r;
}

/* Run the loop until cond holds or ms pass. */
#define PUMP_UNTIL(b, ms, cond)                                                                    \
    do {                                                                                           \
        uint64_t end_ = tu_now_ms() + (ms);                                                        \
        while (!(cond) && tu_now_ms() < end_) wait_once((b), 20 * MS);                             \
    } while (0)

static void pump_for(ug__backend *b, int ms) {
    uint64_t end = tu_now_ms() + (uint64_t)ms;
    while (tu_now_ms() < end) wait_once(b, 10 * MS);
}

static int count_ud(uint64_t ud) {
    int n = 0;
    for (int i = 0; i < ngot; i++) n += got[i].ud == ud;
    return n;
}

static int nfinal(uint64_t ud) {
    int n = 0;
    for (int i = 0; i < ngot; i++) n += got[i].ud == ud && !(got[i].flags & UG__CF_MORE);
    return n;
}

static const ug__completion *final_of(uint64_t ud) {
    for (int i = 0; i < ngot; i++)
        if (got[i].ud == ud && !(got[i].flags & UG__CF_MORE)) return &got[i];
    return NULL;
}

/* The final completion of ud is the last one of ud. */
static int final_is_last(uint64_t ud) {
    int last = -1;
    for (int i = 0; i < ngot; i++)
        if (got[i].ud == ud) last = i;
    return last >= 0 && !(got[last].flags & UG__CF_MORE);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static ug__backend *mk(uint32_t ring, uint32_t nbufs, uint32_t bsz) {
    ug__backend_params p = {.ring_entries = ring, .recv_buffers = nbufs, .recv_buffer_size = bsz};
    ug__backend *b = NULL;
    int r = OPS->create(&b, &p);
    CU_ASSERT_EQUAL(r, 0);
    if (r) fprintf(stderr, "%s create: %s\n", OPS->name, strerror(-r));
    return b;
}

static void close_accepted(void) {
    for (int i = 0; i < nacc; i++) close(acc_fds[i]);
    nacc = 0;
}

/* ---- sockets ------------------------------------------------------------------------ */

static int listener(uint16_t *port, int backlog) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, backlog) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* A connected loopback pair: cli is blocking (5 s timeouts), srv is non-blocking. */
static int tcp_pair(int *cli, int *srv) {
    uint16_t port;
    int lfd = listener(&port, 4);
    if (lfd < 0) return -1;
    *cli = tu_connect(port);
    *srv = -1;
    if (*cli >= 0) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, 2000) == 1) *srv = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
    close(lfd);
    if (*srv < 0) {
        if (*cli >= 0) close(*cli);
        return -1;
    }
    return 0;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_accept_multishot(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    uint16_t port;
    int lfd = listener(&port, 64);
    CU_ASSERT_FATAL(lfd >= 0);
    CU_ASSERT_EQUAL(OPS->accept(b, lfd, UD_ACC), 0);
    wait_once(b, 0);
    enum { N = 5 };
    int cl[N];
    for (int i = 0; i < N; i++) CU_ASSERT((cl[i] = tu_connect(port)) >= 0);
    PUMP_UNTIL(b, 3000, nacc >= N);
    CU_ASSERT_EQUAL(nacc, N);
    CU_ASSERT_EQUAL(count_ud(UD_ACC), N);
    for (int i = 0; i < ngot; i++) {
        CU_ASSERT_EQUAL(got[i].ud, UD_ACC);
        CU_ASSERT(got[i].res >= 0);
        CU_ASSERT(got[i].flags & UG__CF_MORE);
        CU_ASSERT_FALSE(got[i].flags & UG__CF_BUFFER);
        int fl = fcntl(got[i].res, F_GETFL), fdf = fcntl(got[i].res, F_GETFD);
        CU_ASSERT(fl >= 0 && (fl & O_NONBLOCK));
        CU_ASSERT(fdf >= 0 && (fdf & FD_CLOEXEC));
        for (int j = 0; j < i; j++) CU_ASSERT_NOT_EQUAL(got[i].res, got[j].res);
    }
    /* still armed: one more connection comes through the same operation */
    int extra = tu_connect(port);
    PUMP_UNTIL(b, 3000, nacc >= N + 1);
    CU_ASSERT_EQUAL(nacc, N + 1);
    CU_ASSERT_EQUAL(nfinal(UD_ACC), 0);
    CU_ASSERT_EQUAL(OPS->cancel(b, UD_ACC), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_ACC));
    CU_ASSERT_EQUAL(nfinal(UD_ACC), 1);
    CU_ASSERT(final_is_last(UD_ACC));
    close_accepted();
    for (int i = 0; i < N; i++) close(cl[i]);
    close(extra);
    OPS->destroy(b);
    close(lfd);
}

static void test_recv_data_eof(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    int cli, srv;
    CU_ASSERT_FATAL(tcp_pair(&cli, &srv) == 0);
    CU_ASSERT_EQUAL(OPS->recv(b, srv, UD_RECV), 0);
    wait_once(b, 0);
    CU_ASSERT_EQUAL(tu_send_all(cli, "hello", 5), 0);
    PUMP_UNTIL(b, 3000, nsink >= 5);
    CU_ASSERT_EQUAL_FATAL(ngot, 1);
    CU_ASSERT_EQUAL(got[0].ud, UD_RECV);
    CU_ASSERT_EQUAL(got[0].res, 5);
    CU_ASSERT_EQUAL(got[0].flags, UG__CF_MORE | UG__CF_BUFFER);
    CU_ASSERT_EQUAL(tu_send_all(cli, " world", 6), 0);
    shutdown(cli, SHUT_WR);
    PUMP_UNTIL(b, 3000, final_of(UD_RECV));
    const ug__completion *f = final_of(UD_RECV);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(f->res, 0);
    CU_ASSERT_FALSE(f->flags & UG__CF_BUFFER);
    CU_ASSERT(final_is_last(UD_RECV));
    CU_ASSERT_EQUAL(nsink, 11);
    CU_ASSERT(nsink == 11 && memcmp(sink, "hello world", 11) == 0);
    pump_for(b, 30);
    CU_ASSERT_EQUAL(nfinal(UD_RECV), 1);
    close(cli);
    close(srv);
    OPS->destroy(b);
}

static void test_recv_enobufs_rearm(void) {
    reset();
    ug__backend *b = mk(64, 2, 16); /* a pool of 2 buffers of 16 bytes */
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    int cli, srv;
    CU_ASSERT_FATAL(tcp_pair(&cli, &srv) == 0);
    char msg[100];
    for (size_t i = 0; i < sizeof msg; i++) msg[i] = (char)('A' + i % 53);
    CU_ASSERT_EQUAL(tu_send_all(cli, msg, sizeof msg), 0);
    auto_release = 0; /* hold the buffers: the pool runs dry */
    CU_ASSERT_EQUAL(OPS->recv(b, srv, UD_RECV), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_RECV));
    const ug__completion *f = final_of(UD_RECV);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(f->res, -ENOBUFS);
    CU_ASSERT_FALSE(f->flags & UG__CF_BUFFER);
    CU_ASSERT(final_is_last(UD_RECV));
    int held = 0;
    uint32_t ids[2] = {0, 0};
    for (int i = 0; i < ngot; i++) {
        if (!(got[i].flags & UG__CF_BUFFER)) continue;
        CU_ASSERT(got[i].flags & UG__CF_MORE);
        CU_ASSERT(got[i].res > 0 && got[i].res <= 16);
        if (held < 2) ids[held] = got[i].buf_id;
        held++;
    }
    CU_ASSERT_EQUAL(held, 2);
    CU_ASSERT(held != 2 || ids[0] != ids[1]);
    for (int i = 0; i < held && i < 2; i++) OPS->recv_release(b, ids[i]);

    /* Like the core: re-arm after every -ENOBUFS until everything is in. */
    auto_release = 1;
    ngot = 0;
    CU_ASSERT_EQUAL(OPS->recv(b, srv, UD_RECV), 0);
    uint64_t end = tu_now_ms() + 3000;
    int rearms = 0;
    while (nsink < sizeof msg && tu_now_ms() < end) {
        wait_once(b, 20 * MS);
        f = final_of(UD_RECV);
        if (f) {
            CU_ASSERT_EQUAL_FATAL(f->res, -ENOBUFS);
            ngot = 0;
            rearms++;
            CU_ASSERT_EQUAL(OPS->recv(b, srv, UD_RECV), 0);
        }
    }
    CU_ASSERT_EQUAL(nsink, sizeof msg);
    CU_ASSERT(nsink == sizeof msg && memcmp(sink, msg, sizeof msg) == 0);
    /* then EOF ends it */
    close(cli);
    ngot = 0;
    end = tu_now_ms() + 3000;
    while (tu_now_ms() < end) {
        wait_once(b, 20 * MS);
        f = final_of(UD_RECV);
        if (f && f->res == -ENOBUFS) { /* possible with io_uring: pool held during reap */
            ngot = 0;
            CU_ASSERT_EQUAL(OPS->recv(b, srv, UD_RECV), 0);
        } else if (f) {
            break;
        }
    }
    f = final_of(UD_RECV);
    CU_ASSERT(f && f->res == 0);
    close(srv);
    OPS->destroy(b);
}

static void test_send_large(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    int cli, srv;
    CU_ASSERT_FATAL(tcp_pair(&cli, &srv) == 0);
    int small = 64 * 1024;
    setsockopt(srv, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(cli, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    const size_t total = (size_t)8 << 20;
    unsigned char *src = malloc(total), *tmp = malloc(32768);
    CU_ASSERT_FATAL(src && tmp);
    for (size_t i = 0; i < total; i++) src[i] = (unsigned char)(i * 31 + (i >> 13));
    /* a recv armed on the same fd meanwhile: both directions on one registration */
    CU_ASSERT_EQUAL(OPS->recv(b, srv, UD_RECV), 0);
    int pinged = 0;
    size_t sent = 0, rcvd = 0, asked = 0;
    int inflight = 0, shorts = 0, sends = 0, bad = 0;
    struct iovec iov[3];
    uint64_t end = tu_now_ms() + 20000;
    while ((sent < total || rcvd < total) && tu_now_ms() < end && !bad) {
        if (!inflight && sent < total) {
            size_t left = total - sent;
            unsigned cnt = 1;
            iov[0].iov_base = src + sent;
            iov[0].iov_len = left;
            if (sent >= total / 2 && left >= 3) { /* second half: the sendmsg path */
                size_t a = left / 3;
                iov[0].iov_len = a;
                iov[1].iov_base = src + sent + a;
                iov[1].iov_len = a;
                iov[2].iov_base = src + sent + 2 * a;
                iov[2].iov_len = left - 2 * a;
                cnt = 3;
            }
            asked = left;
            ngot = 0;
            CU_ASSERT_EQUAL_FATAL(OPS->send(b, srv, iov, cnt, UD_SEND), 0);
            inflight = 1;
            sends++;
        }
        wait_once(b, 1 * MS);
        if (!pinged && sent > total / 4) {
            CU_ASSERT_EQUAL(tu_send_all(cli, "ping", 4), 0);
            pinged = 1;
        }
        for (int i = 0; i < ngot; i++) {
            if (got[i].ud == UD_RECV) CU_ASSERT(got[i].res == 4 || got[i].res == -ENOBUFS);
            if (got[i].ud != UD_SEND) continue;
            CU_ASSERT_FALSE(got[i].flags & UG__CF_MORE);
            if (got[i].res <= 0) {
                CU_FAIL("send completed with an error or 0");
                bad = 1;
                break;
            }
            sent += (size_t)got[i].res;
            if ((size_t)got[i].res < asked) shorts++;
            inflight = 0;
        }
        ngot = 0;
        ssize_t n = recv(cli, tmp, 32768, MSG_DONTWAIT); /* the slow reader */
        if (n > 0) {
            if (rcvd + (size_t)n > total || memcmp(tmp, src + rcvd, (size_t)n)) {
                CU_FAIL("received bytes differ");
                bad = 1;
            }
            rcvd += (size_t)n;
        }
    }
    CU_ASSERT_EQUAL(sent, total);
    CU_ASSERT_EQUAL(rcvd, total);
    CU_ASSERT(shorts >= 1);
    CU_ASSERT(nsink == 4 && memcmp(sink, "ping", 4) == 0);
    printf("(%d sends, %d short) ", sends, shorts);
    ngot = 0;
    CU_ASSERT_EQUAL(OPS->cancel(b, UD_RECV), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_RECV));
    CU_ASSERT(final_of(UD_RECV) && final_of(UD_RECV)->res == -ECANCELED);
    free(src);
    free(tmp);
    close(cli);
    close(srv);
    OPS->destroy(b);
}

/* More sendmsg requests than SQ entries in one batch: checks that the backend keeps each
 * msghdr valid until the kernel consumed its SQE. */
static void test_send_iov_batch(void) {
    reset();
    ug__backend *b = mk(4, 16, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    wait_once(b, 0);
    enum { NP = 10 };
    int cli[NP], srv[NP];
    char text[NP][3][16];
    struct iovec iov[NP][3];
    size_t want[NP];
    for (int p = 0; p < NP; p++) {
        CU_ASSERT_FATAL(tcp_pair(&cli[p], &srv[p]) == 0);
        want[p] = 0;
        for (int k = 0; k < 3; k++) {
            int len = snprintf(text[p][k], sizeof text[p][k], "<%d:%c%.*s>", p, 'a' + k, k + p % 3,
                               "xyzw");
            iov[p][k].iov_base = text[p][k];
            iov[p][k].iov_len = (size_t)len;
            want[p] += (size_t)len;
        }
    }
    for (int p = 0; p < NP; p++) CU_ASSERT_EQUAL(OPS->send(b, srv[p], iov[p], 3, UD(3, p)), 0);
    PUMP_UNTIL(b, 3000, ngot >= NP);
    CU_ASSERT_EQUAL(ngot, NP);
    for (int p = 0; p < NP; p++) {
        int seen = 0;
        for (int i = 0; i < ngot; i++)
            if (got[i].ud == UD(3, p)) {
                seen++;
                CU_ASSERT_EQUAL(got[i].res, (int32_t)want[p]);
            }
        CU_ASSERT_EQUAL(seen, 1);
        char in[64], exp[64];
        size_t n = 0;
        while (n < want[p]) {
            ssize_t r = recv(cli[p], in + n, want[p] - n, 0);
            if (r <= 0) break;
            n += (size_t)r;
        }
        size_t e = 0;
        for (int k = 0; k < 3; k++) {
            memcpy(exp + e, iov[p][k].iov_base, iov[p][k].iov_len);
            e += iov[p][k].iov_len;
        }
        CU_ASSERT(n == want[p] && memcmp(in, exp, n) == 0);
        close(cli[p]);
        close(srv[p]);
    }
    OPS->destroy(b);
}

static void test_cancel_recv(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    int cli, srv;
    CU_ASSERT_FATAL(tcp_pair(&cli, &srv) == 0);
    /* idle recv */
    CU_ASSERT_EQUAL(OPS->recv(b, srv, UD_RECV), 0);
    wait_once(b, 0);
    wait_once(b, 0);
    CU_ASSERT_EQUAL(ngot, 0);
    CU_ASSERT_EQUAL(OPS->cancel(b, UD_RECV), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_RECV));
    CU_ASSERT_EQUAL(count_ud(UD_RECV), 1);
    const ug__completion *f = final_of(UD_RECV);
    CU_ASSERT(f && f->res == -ECANCELED && f->flags == 0);
    pump_for(b, 60);
    CU_ASSERT_EQUAL(ngot, 1);

    /* recv with data racing the cancel: any data first, then exactly one final */
    ngot = 0;
    CU_ASSERT_EQUAL(OPS->recv(b, srv, UD_RECV), 0);
    wait_once(b, 0);
    CU_ASSERT_EQUAL(tu_send_all(cli, "racing", 6), 0);
    CU_ASSERT_EQUAL(OPS->cancel(b, UD_RECV), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_RECV));
    pump_for(b, 60);
    CU_ASSERT_EQUAL(nfinal(UD_RECV), 1);
    CU_ASSERT(final_is_last(UD_RECV));
    close(cli);
    close(srv);
    OPS->destroy(b);
}

/* A send that cannot progress (the peer does not read) ends once when cancelled: with
 * -ECANCELED, or with the bytes it managed to send if it raced. */
static void test_cancel_send(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    int cli, srv;
    CU_ASSERT_FATAL(tcp_pair(&cli, &srv) == 0);
    int small = 16 * 1024;
    setsockopt(srv, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    const size_t len = (size_t)4 << 20;
    char *big = calloc(1, len);
    CU_ASSERT_FATAL(big != NULL);
    struct iovec iov = {.iov_base = big, .iov_len = len};
    /* fill the pipe: the first sends complete short, then one stays pending */
    int pending = 0;
    for (int round = 0; round < 64 && !pending; round++) {
        ngot = 0;
        CU_ASSERT_EQUAL_FATAL(OPS->send(b, srv, &iov, 1, UD_SEND), 0);
        PUMP_UNTIL(b, 200, count_ud(UD_SEND) > 0);
        pending = count_ud(UD_SEND) == 0;
    }
    CU_ASSERT_FATAL(pending);
    CU_ASSERT_EQUAL(OPS->cancel(b, UD_SEND), 0);
    PUMP_UNTIL(b, 3000, count_ud(UD_SEND) > 0);
    pump_for(b, 30);
    CU_ASSERT_EQUAL(count_ud(UD_SEND), 1);
    const ug__completion *f = final_of(UD_SEND);
    CU_ASSERT(f && (f->res == -ECANCELED || f->res > 0));
    free(big);
    close(cli);
    close(srv);
    OPS->destroy(b);
}

static void test_cancel_unknown(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(OPS->cancel(b, UD(5, 12345)), 0);
    CU_ASSERT_EQUAL(OPS->timer_cancel(b, UD(4, 999)), 0);
    pump_for(b, 60);
    CU_ASSERT_EQUAL(ngot, 0); /* the cancels' own results stay inside the backend */
    OPS->destroy(b);
}

static void test_cancel_accept(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    uint16_t port;
    int lfd = listener(&port, 64);
    CU_ASSERT_FATAL(lfd >= 0);
    CU_ASSERT_EQUAL(OPS->accept(b, lfd, UD_ACC), 0);
    wait_once(b, 0);
    enum { N = 3 };
    int cl[N];
    for (int i = 0; i < N; i++) CU_ASSERT((cl[i] = tu_connect(port)) >= 0);
    CU_ASSERT_EQUAL(OPS->cancel(b, UD_ACC), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_ACC));
    const ug__completion *f = final_of(UD_ACC);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_FALSE(f->flags & UG__CF_MORE);
    for (int i = 0; i < ngot; i++)
        if (&got[i] != f) CU_ASSERT(got[i].res >= 0 && (got[i].flags & UG__CF_MORE));
    pump_for(b, 60);
    CU_ASSERT_EQUAL(nfinal(UD_ACC), 1);
    CU_ASSERT(final_is_last(UD_ACC));
    printf("(%d accepted before the final, final res %d) ", nacc, f->res);
    close_accepted();
    for (int i = 0; i < N; i++) close(cl[i]);
    OPS->destroy(b);
    close(lfd);
}

static void test_timer_fire(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    uint64_t t0 = now_ns();
    CU_ASSERT_EQUAL(OPS->timer(b, t0 + 50 * MS, UD_TIMER), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_TIMER));
    uint64_t el = now_ns() - t0;
    const ug__completion *f = final_of(UD_TIMER);
    CU_ASSERT(f && f->res == 0 && f->flags == 0);
    CU_ASSERT(el >= 50 * MS);
    CU_ASSERT(el < 1000 * MS);
    /* a deadline in the past fires at once */
    ngot = 0;
    t0 = now_ns();
    CU_ASSERT_EQUAL(OPS->timer(b, t0 - 5 * MS, UD(4, 2)), 0);
    PUMP_UNTIL(b, 3000, final_of(UD(4, 2)));
    f = final_of(UD(4, 2));
    CU_ASSERT(f && f->res == 0);
    CU_ASSERT(now_ns() - t0 < 500 * MS);
    /* two timers fire in deadline order */
    ngot = 0;
    t0 = now_ns();
    CU_ASSERT_EQUAL(OPS->timer(b, t0 + 40 * MS, UD(4, 4)), 0);
    CU_ASSERT_EQUAL(OPS->timer(b, t0 + 20 * MS, UD(4, 3)), 0);
    PUMP_UNTIL(b, 3000, ngot >= 2);
    CU_ASSERT(ngot == 2 && got[0].ud == UD(4, 3) && got[1].ud == UD(4, 4));
    OPS->destroy(b);
}

static void test_timer_cancel(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(OPS->timer(b, now_ns() + 10000 * MS, UD_TIMER), 0);
    wait_once(b, 0);
    uint64_t t0 = now_ns();
    CU_ASSERT_EQUAL(OPS->timer_cancel(b, UD_TIMER), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_TIMER));
    const ug__completion *f = final_of(UD_TIMER);
    CU_ASSERT(f && f->res == -ECANCELED && f->flags == 0);
    CU_ASSERT(now_ns() - t0 < 1000 * MS);
    /* cancel() reaches timers too */
    ngot = 0;
    CU_ASSERT_EQUAL(OPS->timer(b, now_ns() + 10000 * MS, UD(4, 3)), 0);
    wait_once(b, 0);
    CU_ASSERT_EQUAL(OPS->cancel(b, UD(4, 3)), 0);
    PUMP_UNTIL(b, 3000, final_of(UD(4, 3)));
    f = final_of(UD(4, 3));
    CU_ASSERT(f && f->res == -ECANCELED);
    pump_for(b, 30);
    CU_ASSERT_EQUAL(ngot, 1);
    OPS->destroy(b);
}

static void *waker(void *arg) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * MS};
    nanosleep(&ts, NULL);
    OPS->wake(arg);
    return NULL;
}

/* valgrind 3.19 does not treat io_uring_enter as blocking: other threads cannot run while
 * it sleeps in the kernel, so a cross-thread wake cannot be observed there. */
static int under_valgrind(void) {
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload");
}

static void test_wake_thread(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    /* backstop: if wake() were broken, wait(-1) still returns after 3 s */
    CU_ASSERT_EQUAL(OPS->timer(b, now_ns() + 3000 * MS, UD_TIMER), 0);
    wait_once(b, 0);
    if (OPS == &ug__backend_uring && under_valgrind()) {
        printf("(valgrind: cross-thread part skipped) ");
        goto same_thread;
    }
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, waker, b) == 0);
    uint64_t t0 = now_ns();
    int r = OPS->wait(b, -1, 1, collect, b);
    uint64_t el = now_ns() - t0;
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(r, 0);
    CU_ASSERT_EQUAL(ngot, 0);
    CU_ASSERT(el >= 50 * MS);
    CU_ASSERT(el < 1000 * MS);
same_thread:
    /* a wake that comes before the wait is not lost */
    OPS->wake(b);
    OPS->wake(b);
    t0 = now_ns();
    r = OPS->wait(b, -1, 1, collect, b);
    CU_ASSERT_EQUAL(r, 0);
    CU_ASSERT(now_ns() - t0 < 1000 * MS);
    CU_ASSERT_EQUAL(OPS->timer_cancel(b, UD_TIMER), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_TIMER));
    CU_ASSERT(final_of(UD_TIMER) && final_of(UD_TIMER)->res == -ECANCELED);
    OPS->destroy(b);
}

/* The n-th lowest free descriptor number (n = 0: the lowest). */
static int nth_free_fd(int n) {
    for (int fd = 0; fd < 65536; fd++)
        if (fcntl(fd, F_GETFD) < 0 && n-- == 0) return fd;
    return -1;
}

/* The soft RLIMIT_NOFILE the kernel applies (valgrind, for one, keeps setrlimit to itself). */
static long kernel_nofile(void) {
    FILE *f = fopen("/proc/self/limits", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Max open files", 14)) v = strtol(line + 14, NULL, 10);
    if (f) fclose(f);
    return v;
}

/* A wait asked for a batch still returns short of it: at its deadline, within the batching
 * delay when something is ready, at a wake. A backend that held completions until the batch
 * was full would stop a lightly loaded loop. */
static void test_batch_wait(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    wait_once(b, 0);
    /* no deadline: one timer is what completes */
    uint64_t t0 = now_ns();
    CU_ASSERT_EQUAL(OPS->timer(b, t0 + 20 * MS, UD_TIMER), 0);
    int r = OPS->wait(b, -1, 16, collect, b);
    uint64_t el = now_ns() - t0;
    CU_ASSERT_EQUAL(r, 1);
    CU_ASSERT(final_of(UD_TIMER) != NULL);
    CU_ASSERT(el >= 20 * MS);
    CU_ASSERT(el < 1000 * MS);
    /* a deadline and nothing completing: the deadline is kept */
    ngot = 0;
    t0 = now_ns();
    r = OPS->wait(b, 30 * MS, 16, collect, b);
    el = now_ns() - t0;
    CU_ASSERT_EQUAL(r, 0);
    CU_ASSERT(el >= 30 * MS);
    CU_ASSERT(el < 1000 * MS);
    /* two sends complete: both come, long before the batch is full */
    int cli, srv;
    CU_ASSERT_FATAL(tcp_pair(&cli, &srv) == 0);
    static char a[] = "one", c[] = "two";
    struct iovec v1 = {a, 3}, v2 = {c, 3};
    ngot = 0;
    CU_ASSERT_EQUAL(OPS->send(b, srv, &v1, 1, UD_SEND), 0);
    CU_ASSERT_EQUAL(OPS->send(b, srv, &v2, 1, UD(3, 10)), 0);
    t0 = now_ns();
    while (ngot < 2 && now_ns() - t0 < 2000 * MS) CU_ASSERT(OPS->wait(b, -1, 16, collect, b) >= 0);
    CU_ASSERT(now_ns() - t0 < 1000 * MS);
    CU_ASSERT(final_of(UD_SEND) && final_of(UD_SEND)->res == 3);
    CU_ASSERT(final_of(UD(3, 10)) && final_of(UD(3, 10))->res == 3);
    close(cli);
    close(srv);
    /* a wake from another thread ends a batched wait without a deadline */
    if (!(OPS == &ug__backend_uring && under_valgrind())) {
        ngot = 0;
        pthread_t th;
        CU_ASSERT_FATAL(pthread_create(&th, NULL, waker, b) == 0);
        t0 = now_ns();
        r = OPS->wait(b, -1, 16, collect, b);
        el = now_ns() - t0;
        pthread_join(th, NULL);
        CU_ASSERT_EQUAL(r, 0);
        CU_ASSERT(el >= 50 * MS);
        CU_ASSERT(el < 1000 * MS);
    }
    OPS->destroy(b);
}

/* EMFILE ends the multishot accept; the connection that hit it stays queued. */
static void test_accept_emfile(void) {
    reset();
    ug__backend *b = mk(64, 64, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    uint16_t port;
    int lfd = listener(&port, 64);
    CU_ASSERT_FATAL(lfd >= 0);
    enum { NC = 8 };
    int cl[NC];
    for (int i = 0; i < NC; i++)
        CU_ASSERT_FATAL((cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) >=
                        0);
    struct rlimit old, lim;
    CU_ASSERT_FATAL(getrlimit(RLIMIT_NOFILE, &old) == 0);
    /* The limit only bounds new descriptors: with it at the third free number, exactly two
     * can still be allocated, whatever is open above it. */
    lim = old;
    lim.rlim_cur = (rlim_t)nth_free_fd(2);
    CU_ASSERT_FATAL(setrlimit(RLIMIT_NOFILE, &lim) == 0);
    int avail = 0;
    for (int fd = 0; fd < (int)lim.rlim_cur; fd++) avail += fcntl(fd, F_GETFD) < 0;
    if (kernel_nofile() != (long)lim.rlim_cur || avail >= NC) {
        setrlimit(RLIMIT_NOFILE, &old);
        printf("(RLIMIT_NOFILE not enforceable here: skipped) ");
        goto out;
    }
    CU_ASSERT_EQUAL(OPS->accept(b, lfd, UD_ACC), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < NC; i++) {
        int r = connect(cl[i], (struct sockaddr *)&a, sizeof a);
        CU_ASSERT(r == 0 || errno == EINPROGRESS);
    }
    PUMP_UNTIL(b, 3000, final_of(UD_ACC));
    setrlimit(RLIMIT_NOFILE, &old);
    const ug__completion *f = final_of(UD_ACC);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(f->res, -EMFILE);
    CU_ASSERT_FALSE(f->flags & UG__CF_MORE);
    CU_ASSERT(final_is_last(UD_ACC));
    CU_ASSERT(nacc <= avail);
    printf("(%d of %d accepted, then %d without MORE) ", nacc, NC, f->res);
    /* re-armed with fds to spare: the rest, the one that hit EMFILE included */
    int first = nacc;
    ngot = 0;
    CU_ASSERT_EQUAL(OPS->accept(b, lfd, UD_ACC), 0);
    PUMP_UNTIL(b, 3000, nacc >= NC);
    CU_ASSERT_EQUAL(nacc, NC);
    CU_ASSERT_EQUAL(nfinal(UD_ACC), 0);
    CU_ASSERT(first < NC);
    CU_ASSERT_EQUAL(OPS->cancel(b, UD_ACC), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_ACC));
    CU_ASSERT_PTR_NOT_NULL(final_of(UD_ACC));
out:
    close_accepted();
    for (int i = 0; i < NC; i++) close(cl[i]);
    OPS->destroy(b);
    close(lfd);
}

/* io_uring only: a CQ overflow ends the multishot accept (a final CQE without F_MORE, which
 * may carry a live fd); re-arming collects every remaining connection, none lost. */
static void test_cq_overflow_accept(void) {
    reset();
    ug__backend *b = mk(4, 16, 4096); /* SQ 4, CQ 16 */
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    uint16_t port;
    int lfd = listener(&port, 256);
    CU_ASSERT_FATAL(lfd >= 0);
    CU_ASSERT_EQUAL(OPS->accept(b, lfd, UD_ACC), 0);
    wait_once(b, 0);
    enum { NCONN = 48 };
    int cl[NCONN];
    for (int i = 0; i < NCONN; i++) CU_ASSERT_FATAL((cl[i] = tu_connect(port)) >= 0);
    /* all 48 are queued; the next io_uring_enter runs the accepts into a 16-entry CQ */
    PUMP_UNTIL(b, 3000, final_of(UD_ACC));
    const ug__completion *f = final_of(UD_ACC);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_FALSE(f->flags & UG__CF_MORE);
    CU_ASSERT(final_is_last(UD_ACC));
    printf("(overflow: %d completions, %d fds, final res %d) ", ngot, nacc, f->res);
    int finals = 1;
    uint64_t end = tu_now_ms() + 5000;
    while (nacc < NCONN && tu_now_ms() < end) { /* re-arm on every final, like the core */
        ngot = 0;
        CU_ASSERT_EQUAL_FATAL(OPS->accept(b, lfd, UD_ACC), 0);
        while (!final_of(UD_ACC) && nacc < NCONN && tu_now_ms() < end) wait_once(b, 20 * MS);
        if (final_of(UD_ACC)) finals++;
    }
    CU_ASSERT_EQUAL(nacc, NCONN);
    for (int i = 0; i < nacc; i++)
        for (int j = 0; j < i; j++) CU_ASSERT_NOT_EQUAL(acc_fds[i], acc_fds[j]);
    printf("(%d finals) ", finals);
    if (!final_of(UD_ACC)) {
        CU_ASSERT_EQUAL(OPS->cancel(b, UD_ACC), 0);
        PUMP_UNTIL(b, 3000, final_of(UD_ACC));
    }
    close_accepted();
    for (int i = 0; i < NCONN; i++) close(cl[i]);
    OPS->destroy(b);
    close(lfd);
}

/* io_uring only: the same for a multishot recv. Its last CQE (no F_MORE) still carries
 * data in a buffer: nothing may be lost across the re-arms. */
static void test_cq_overflow_recv(void) {
    reset();
    ug__backend *b = mk(4, 64, 16); /* CQ 16, 16-byte buffers */
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    int cli, srv;
    CU_ASSERT_FATAL(tcp_pair(&cli, &srv) == 0);
    char msg[600];
    for (size_t i = 0; i < sizeof msg; i++) msg[i] = (char)('a' + (i * 7) % 26);
    CU_ASSERT_EQUAL(tu_send_all(cli, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(OPS->recv(b, srv, UD_RECV), 0);
    int finals = 0, with_data = 0;
    uint64_t end = tu_now_ms() + 3000;
    while (nsink < sizeof msg && tu_now_ms() < end) {
        wait_once(b, 20 * MS);
        const ug__completion *f = final_of(UD_RECV);
        if (!f) continue;
        CU_ASSERT(f->res > 0 || f->res == -ENOBUFS);
        finals++;
        with_data += f->res > 0 && (f->flags & UG__CF_BUFFER);
        ngot = 0;
        CU_ASSERT_EQUAL_FATAL(OPS->recv(b, srv, UD_RECV), 0);
    }
    CU_ASSERT_EQUAL(nsink, sizeof msg);
    CU_ASSERT(nsink == sizeof msg && memcmp(sink, msg, sizeof msg) == 0);
    CU_ASSERT(finals >= 1);
    printf("(%d finals, %d of them with data) ", finals, with_data);
    CU_ASSERT_EQUAL(OPS->cancel(b, UD_RECV), 0);
    PUMP_UNTIL(b, 3000, final_of(UD_RECV));
    close(cli);
    close(srv);
    OPS->destroy(b);
}

/* ---- registration ----------------------------------------------------------------------- */

static CU_TestInfo common_tests[] = {
    {"accept: multishot, one fd per connection", test_accept_multishot},
    {"recv: data then EOF", test_recv_data_eof},
    {"recv: pool of 2 runs dry, ENOBUFS, re-arm", test_recv_enobufs_rearm},
    {"send: 8 MiB to a slow reader", test_send_large},
    {"send: sendmsg batch larger than the SQ", test_send_iov_batch},
    {"cancel: armed recv ends once", test_cancel_recv},
    {"cancel: blocked send ends once", test_cancel_send},
    {"cancel: unknown ud is silent", test_cancel_unknown},
    {"cancel: multishot accept ends", test_cancel_accept},
    {"timer: fires at its deadline", test_timer_fire},
    {"timer: cancel yields ECANCELED", test_timer_cancel},
    {"wake: from another thread", test_wake_thread},
    {"wait: a batched wait returns short of its batch", test_batch_wait},
    {"accept: EMFILE ends it, re-arm", test_accept_emfile},
    CU_TEST_INFO_NULL,
};

static int init_epoll(void) {
    OPS = &ug__backend_epoll;
    return 0;
}

static int init_uring(void) {
    OPS = &ug__backend_uring;
    return 0;
}

static void add_tests(CU_pSuite s, const CU_TestInfo *t) {
    for (; t->pName; t++) CU_add_test(s, t->pName, t->pTestFunc);
}

static void register_suites(void) {
    add_tests(CU_add_suite("backend epoll", init_epoll, NULL), common_tests);
    ug__backend *b = NULL;
    int r = tu_uring_available() ? ug__backend_uring.create(&b, NULL) : -ENOSYS;
    if (r < 0) {
        printf("SKIP: io_uring backend suite: %s\n", strerror(-r));
        return;
    }
    ug__backend_uring.destroy(b);
    CU_pSuite s = CU_add_suite("backend io_uring", init_uring, NULL);
    add_tests(s, common_tests);
    CU_add_test(s, "CQ overflow ends multishot accept, re-arm", test_cq_overflow_accept);
    CU_add_test(s, "CQ overflow ends multishot recv, data kept", test_cq_overflow_recv);
}

int main(void) {
    return tu_main(register_suites, 100);
}
