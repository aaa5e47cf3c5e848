/*
 * ugate-listeners: the measurements behind ugate's choice of how connections reach its loops
 * (docs/threads.md): what the kernel does with the two alternatives to one acceptor.
 *
 *   ugate-listeners [--conns N] [--rounds R] [--port P]   (uses ports P and P + 1)
 *
 * Over loopback, each of R rounds (default 20) with N connections (default 100):
 *
 *   reuseport-spread  two SO_REUSEPORT listeners on one port; N clients connect (each from a
 *                     fresh ephemeral port); the connections each listener's queue got.
 *   reuseport-close   the same, then listener 0 is closed with its queue not yet accepted:
 *                     how many of the clients queued there are reset, and how many the kernel
 *                     moved to listener 1 (net.ipv4.tcp_migrate_req, printed; it is per
 *                     network namespace, so run this under `unshare -n` to try both values).
 *   shared-accept     one listener, a multishot accept armed on it by each of two threads,
 *                     each with its own io_uring: the connections each thread got.
 *
 * Prints, per experiment, a share (min, median, max over the rounds) and a machine-readable
 * line:
 *   RESULT exp=NAME conns=N rounds=R share_min= share_med= share_max= [reset= survivor_accepted=
 *          of= migrate_req=]
 * The share is the first listener's (reuseport-spread), the first thread's (shared-accept), or
 * the clients reset (reuseport-close). Exit status: 0 measured (shared-accept skipped with a
 * message where io_uring is refused); 1 usage or system error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define MAX_ROUNDS 1000

static int opt_conns = 100, opt_rounds = 20, opt_port = 18190;

static void die(const char *what) {
    fprintf(stderr, "ugate-listeners: %s: %s\n", what, strerror(errno));
    exit(1);
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int listener(int port, int reuseport) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) die("SO_REUSEADDR");
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        die("SO_REUSEPORT");
    struct sockaddr_in a = loopback(port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) die("bind (port in use? --port)");
    if (listen(fd, MAX_CONNS) != 0) die("listen");
    return fd;
}

/* A blocking connect over loopback returns once the kernel finished the handshake: the
 * connection is in a listener's accept queue by then. */
static int client(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in a = loopback(port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
    return fd;
}

static int drain_accept(int lfd) {
    int n = 0, fd;
    while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
        close(fd);
        n++;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) die("accept4");
    return n;
}

/* Whether the server side reset this client: a read that does not block says so. */
static int was_reset(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 100) < 0) die("poll");
    char c;
    return recv(fd, &c, 1, MSG_DONTWAIT) < 0 && errno == ECONNRESET;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *exp, double *share, int rounds, const char *extra) {
    qsort(share, (size_t)rounds, sizeof *share, cmp_double);
    double med = rounds % 2 ? share[rounds / 2] : (share[rounds / 2 - 1] + share[rounds / 2]) / 2;
    printf("%-17s %d conns x %d rounds: first's share min %.1f%% median %.1f%% max %.1f%%%s%s\n",
           exp, opt_conns, rounds, 100 * share[0], 100 * med, 100 * share[rounds - 1],
           extra[0] ? ", " : "", extra);
    printf("RESULT exp=%s conns=%d rounds=%d share_min=%.3f share_med=%.3f share_max=%.3f%s%s\n",
           exp, opt_conns, rounds, share[0], med, share[rounds - 1], extra[0] ? " " : "", extra);
}

static int migrate_req(void) {
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "r");
    int v = -1;
    if (f) {
        if (fscanf(f, "%d", &v) != 1) v = -1;
        fclose(f);
    }
    return v;
}

static int clients[MAX_CONNS];
static double share[MAX_ROUNDS];

static void reuseport(int close_first) {
    long reset = 0, survivor = 0;
    for (int r = 0; r < opt_rounds; r++) {
        int l0 = listener(opt_port, 1), l1 = listener(opt_port, 1);
        for (int i = 0; i < opt_conns; i++) clients[i] = client(opt_port);
        int a0 = 0;
        if (close_first) {
            /* Listener 0 goes away with its queue unaccepted, as a loop's listener would if
             * the loop closed it without draining: what the kernel does with that queue
             * shows in the clients (reset) and in listener 1 (moved there). */
            close(l0);
            l0 = -1;
        } else {
            a0 = drain_accept(l0);
        }
        int a1 = drain_accept(l1), resets = 0;
        if (close_first)
            for (int i = 0; i < opt_conns; i++) resets += was_reset(clients[i]);
        if (a0 + a1 + resets != opt_conns) {
            fprintf(stderr, "ugate-listeners: %d accepted and %d reset of %d connections\n",
                    a0 + a1, resets, opt_conns);
            exit(1);
        }
        /* Without the close: listener 0's share; with it: the share listener 0 had queued
         * and lost (reset) or handed on (the survivor's excess is not separable from its own
         * share, so the survivor's total is reported). */
        share[r] = close_first ? (double)resets / opt_conns : (double)a0 / opt_conns;
        reset += resets;
        survivor += a1;
        for (int i = 0; i < opt_conns; i++) close(clients[i]);
        if (l0 >= 0) close(l0);
        close(l1);
    }
    char extra[160] = "";
    if (close_first)
        snprintf(extra, sizeof extra, "reset=%ld survivor_accepted=%ld of=%ld migrate_req=%d",
                 reset, survivor, (long)opt_conns * opt_rounds, migrate_req());
    report(close_first ? "reuseport-close" : "reuseport-spread", share, opt_rounds, extra);
}

/* shared-accept: two threads, each with its own ring and a multishot accept on one
 * listener, as "an accept armed on every loop" would be. */
struct acceptor {
    pthread_t thread;
    struct io_uring ring;
    int lfd;
    atomic_int accepted;
    atomic_int failed;
};
static atomic_int stop_acceptors;

static void *acceptor_main(void *arg) {
    struct acceptor *a = arg;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&a->ring);
    io_uring_prep_multishot_accept(sqe, a->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (io_uring_submit(&a->ring) != 1) {
        atomic_store(&a->failed, 1);
        return NULL;
    }
    while (!atomic_load(&stop_acceptors)) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        int rc = io_uring_wait_cqe_timeout(&a->ring, &cqe, &ts);
        if (rc == -ETIME || rc == -EINTR) continue;
        if (rc < 0) {
            atomic_store(&a->failed, 1);
            return NULL;
        }
        int res = cqe->res;
        unsigned more = cqe->flags & IORING_CQE_F_MORE;
        io_uring_cqe_seen(&a->ring, cqe);
        if (res >= 0) {
            close(res);
            atomic_fetch_add(&a->accepted, 1);
        }
        if (!more) { /* the multishot ended (an error, or overflow): arm it again */
            sqe = io_uring_get_sqe(&a->ring);
            io_uring_prep_multishot_accept(sqe, a->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (io_uring_submit(&a->ring) != 1) {
                atomic_store(&a->failed, 1);
                return NULL;
            }
        }
    }
    return NULL;
}

static int shared_accept(void) {
    struct acceptor acc[2];
    for (int r = 0; r < opt_rounds; r++) {
        /* A port the reuseport groups did not use. SO_REUSEPORT on a lone listener changes
         * nothing in how it accepts; it lets the next round bind while this round's accepted
         * sockets (closed first, by the acceptors) linger in FIN_WAIT. */
        int lfd = listener(opt_port + 1, 1);
        atomic_store(&stop_acceptors, 0);
        for (int t = 0; t < 2; t++) {
            memset(&acc[t], 0, sizeof acc[t]);
            acc[t].lfd = lfd;
            int rc = io_uring_queue_init(8, &acc[t].ring, 0);
            if (rc < 0) {
                fprintf(stderr, "ugate-listeners: shared-accept skipped: io_uring refused (%s)\n",
                        strerror(-rc));
                for (int u = 0; u < t; u++) io_uring_queue_exit(&acc[u].ring);
                close(lfd);
                return 77;
            }
        }
        for (int t = 0; t < 2; t++)
            if (pthread_create(&acc[t].thread, NULL, acceptor_main, &acc[t]) != 0)
                die("pthread_create");
        /* give both threads time to arm before the first client */
        nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
        for (int i = 0; i < opt_conns; i++) clients[i] = client(opt_port + 1);
        for (int w = 0; w < 200; w++) { /* at most 2 s for the accepts to complete */
            if (atomic_load(&acc[0].accepted) + atomic_load(&acc[1].accepted) >= opt_conns) break;
            nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
        }
        atomic_store(&stop_acceptors, 1);
        for (int t = 0; t < 2; t++) pthread_join(acc[t].thread, NULL);
        int a0 = atomic_load(&acc[0].accepted), a1 = atomic_load(&acc[1].accepted);
        for (int t = 0; t < 2; t++) io_uring_queue_exit(&acc[t].ring);
        for (int i = 0; i < opt_conns; i++) close(clients[i]);
        close(lfd);
        if (acc[0].failed || acc[1].failed || a0 + a1 != opt_conns) {
            fprintf(stderr, "ugate-listeners: shared-accept: %d + %d accepted of %d%s\n", a0, a1,
                    opt_conns, acc[0].failed || acc[1].failed ? " (a ring failed)" : "");
            return 1;
        }
        share[r] = (double)a0 / opt_conns;
    }
    report("shared-accept", share, opt_rounds, "");
    return 0;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {{"conns", required_argument, NULL, 'c'},
                                         {"rounds", required_argument, NULL, 'r'},
                                         {"port", required_argument, NULL, 'p'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            opt_conns = atoi(optarg);
            break;
        case 'r':
            opt_rounds = atoi(optarg);
            break;
        case 'p':
            opt_port = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: ugate-listeners [--conns N] [--rounds R] [--port P]\n");
            return 1;
        }
    }
    if (opt_conns < 1 || opt_conns > MAX_CONNS || opt_rounds < 1 || opt_rounds > MAX_ROUNDS ||
        opt_port < 1 || opt_port > 65534) {
        fprintf(stderr, "ugate-listeners: --conns 1..%d, --rounds 1..%d, --port 1..65534\n",
                MAX_CONNS, MAX_ROUNDS);
        return 1;
    }
    reuseport(0);
    reuseport(1);
    int rc = shared_accept();
    return rc == 77 ? 0 : rc;
}
