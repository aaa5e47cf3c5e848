/* Timeouts, limits and overload, end to end over loopback, on both backends
 * (`test_limits`, `test_limits epoll`): slowloris, slow reader, idle keep-alive, body gaps,
 * the handler timeout and late answers, each size limit, the connection limit (the gate
 * pauses, clients wait in the backlog), EMFILE in a child process, load shedding, and a
 * shutdown while the gate is paused. Small timeouts (100-500 ms) keep the suite fast. */
#include "testserver.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const char GET_ROOT[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";

/* ------------------------------------------------------------------ helpers */

static void close_fd(int fd) {
    if (fd < 0) return;
    tu_forget(fd);
    close(fd);
}

static int send_str(int fd, const char *s) {
    return tu_send_all(fd, s, strlen(s));
}

/* 1 if fd becomes readable (data, EOF or error) within ms. */
static int readable_within(int fd, int ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r > 0;
}

/* One GET / on fd; 1 if answered 200 with the hello body. */
static int get_root_ok(int fd) {
    char body[64];
    if (send_str(fd, GET_ROOT) < 0) return 0;
    return tu_read_response(fd, body, sizeof body, NULL) == 200 && !strcmp(body, "Hello, World!");
}

static int has_header(const char *hdrs, const char *line) {
    return hdrs && strstr(hdrs, line) != NULL;
}

static void cfg_init(ug_config *cfg) {
    ug_config_init(cfg);
}

/* ------------------------------------------------------------------ keep-alive client */

/* An ordinary client on its own thread: one keep-alive connection, a request every few ms;
 * every request must be answered. */
typedef struct ka_client {
    pthread_t thr;
    uint16_t port;
    int stop; /* atomic */
    int ok, fail;
} ka_client;

static void *ka_main(void *arg) {
    ka_client *k = arg;
    int fd = -1;
    uint64_t end = tu_now_ms() + 20000; /* hard bound */
    while (!__atomic_load_n(&k->stop, __ATOMIC_ACQUIRE) && tu_now_ms() < end) {
        if (fd < 0 && (fd = tu_connect(k->port)) < 0) {
            k->fail++;
            usleep(10000);
            continue;
        }
        if (get_root_ok(fd)) {
            k->ok++;
        } else {
            k->fail++;
            close_fd(fd);
            fd = -1;
        }
        usleep(5000);
    }
    close_fd(fd);
    return NULL;
}

static void ka_start(ka_client *k, uint16_t port) {
    memset(k, 0, sizeof *k);
    k->port = port;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&k->thr, NULL, ka_main, k), 0);
}

static void ka_stop(ka_client *k) {
    __atomic_store_n(&k->stop, 1, __ATOMIC_RELEASE);
    pthread_join(k->thr, NULL);
}

/* ------------------------------------------------------------------ 1. slowloris */

/* 500 connections each send a request line and the start of a header, then one byte every
 * 50 ms: every one is answered 408 (or closed) and closed at the read header timeout, while
 * an ordinary keep-alive client keeps being served. */
static void test_slowloris_500(void) {
    enum { N = 500, TIMEOUT = 300, SLACK = 400 };
    ug_config cfg;
    cfg_init(&cfg);
    cfg.read_header_timeout_ms = TIMEOUT;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    ka_client ka;
    ka_start(&ka, sc.port);
    usleep(20 * 1000);

    static int fds[N], status[N], got[N];
    static char first[N][16];
    static uint64_t t_conn[N], t_end[N];
    static struct pollfd pf[N];
    static int pidx[N];
    static const char head[] = "GET / HTTP/1.1\r\nHost: t\r\nX-a: ";
    int connect_fail = 0;
    for (int i = 0; i < N; i++) {
        status[i] = got[i] = 0;
        t_end[i] = 0;
        fds[i] = tu_connect(sc.port);
        t_conn[i] = tu_now_ms();
        if (fds[i] < 0 || send(fds[i], head, sizeof head - 1, MSG_NOSIGNAL) != sizeof head - 1) {
            connect_fail++;
            close_fd(fds[i]);
            fds[i] = -1;
        }
    }
    CU_ASSERT_EQUAL(connect_fail, 0);

    int open = N - connect_fail;
    uint64_t now = tu_now_ms(), next_tick = now + 50, hard_end = now + 5000;
    while (open > 0 && now < hard_end) {
        int n = 0;
        for (int i = 0; i < N; i++)
            if (fds[i] >= 0) {
                pf[n].fd = fds[i];
                pf[n].events = POLLIN;
                pf[n].revents = 0;
                pidx[n++] = i;
            }
        int wait = next_tick > now ? (int)(next_tick - now) : 0;
        int r = poll(pf, (nfds_t)n, wait);
        now = tu_now_ms();
        for (int j = 0; r > 0 && j < n; j++) {
            if (!pf[j].revents) continue;
            int i = pidx[j];
            char buf[4096];
            ssize_t k = recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
            if (k > 0) {
                for (ssize_t b = 0; b < k && got[i] < (int)sizeof first[i] - 1; b++)
                    first[i][got[i]++] = buf[b];
                first[i][got[i]] = 0;
                if (!status[i] && got[i] >= 12) sscanf(first[i], "HTTP/1.%*d %d", &status[i]);
                continue;
            }
            if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            t_end[i] = now; /* EOF or reset: closed */
            close(fds[i]);
            fds[i] = -1;
            open--;
        }
        if (now >= next_tick) { /* one more header byte on every connection still open */
            for (int i = 0; i < N; i++)
                if (fds[i] >= 0) {
                    ssize_t w = send(fds[i], "a", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
                    (void)w;
                }
            next_tick += 50;
        }
    }
    ka_stop(&ka);

    int still_open = 0, n408 = 0, closed_bare = 0, other = 0;
    uint64_t dmin = UINT64_MAX, dmax = 0;
    for (int i = 0; i < N; i++) {
        if (fds[i] >= 0) {
            still_open++;
            close(fds[i]);
            continue;
        }
        if (!t_end[i]) continue; /* never connected */
        if (status[i] == 408)
            n408++;
        else if (got[i] == 0)
            closed_bare++;
        else
            other++;
        uint64_t d = t_end[i] - t_conn[i];
        if (d < dmin) dmin = d;
        if (d > dmax) dmax = d;
    }
    fprintf(stderr,
            "\n    slowloris: %d answered 408, %d closed without response, %d other, %d still "
            "open; closed %llu..%llu ms after connect; keep-alive client %d ok %d failed\n",
            n408, closed_bare, other, still_open, (unsigned long long)dmin,
            (unsigned long long)dmax, ka.ok, ka.fail);
    CU_ASSERT_EQUAL(still_open, 0);
    CU_ASSERT_EQUAL(other, 0);
    CU_ASSERT_EQUAL(n408 + closed_bare, N);
    CU_ASSERT(dmin >= TIMEOUT - 50);
    CU_ASSERT(dmax <= TIMEOUT + SLACK);
    CU_ASSERT_EQUAL(ka.fail, 0);
    CU_ASSERT(ka.ok > 0);
    ts_stop(&sc);
    CU_ASSERT(sc.stats.timeouts_read_header >= N);
}

/* ------------------------------------------------------------------ 2. write timeout */

/* A client with a tiny receive buffer asks for 4 MiB and stops reading: the send stops
 * progressing and the server cuts the connection at the write timeout. */
static void test_write_timeout_slow_reader(void) {
    enum { TIMEOUT = 200, SLACK = 400 };
    ug_config cfg;
    cfg_init(&cfg);
    cfg.write_timeout_ms = TIMEOUT;
    srv_ctx sc;
    ts_start(&sc, &cfg);

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CU_ASSERT_FATAL(fd >= 0);
    int rb = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(sc.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_EQUAL_FATAL(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    CU_ASSERT_EQUAL(send_str(fd, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    uint64_t t0 = tu_now_ms();

    /* A second client is served meanwhile; the counters are read on the loop thread. */
    int fd2 = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd2 >= 0);
    int served = 0, failed = 0;
    ug_stats st;
    memset(&st, 0, sizeof st);
    uint64_t t_cut = 0;
    while (tu_now_ms() - t0 < 3000) {
        if (get_root_ok(fd2))
            served++;
        else
            failed++;
        ts_stats_now(&sc, &st);
        if (st.timeouts_write) {
            t_cut = tu_now_ms() - t0;
            break;
        }
        usleep(5000);
    }
    for (int i = 0; i < 5; i++) { /* and after the cut */
        if (get_root_ok(fd2))
            served++;
        else
            failed++;
    }

    /* The client drains what was sent before the cut, then sees EOF (or a reset). */
    size_t total = 0;
    int ended = 0;
    static char buf[65536];
    uint64_t dl = tu_now_ms() + 5000;
    while (tu_now_ms() < dl) {
        ssize_t n = tu_recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        ended = n == 0 ? 1 : (errno == ECONNRESET || errno == EPIPE) ? 2 : 0;
        break;
    }
    fprintf(stderr, "\n    write timeout: cut %llu ms after the request, %zu bytes drained, %s\n",
            (unsigned long long)t_cut, total,
            ended == 1   ? "EOF"
            : ended == 2 ? "reset"
                         : "no end");
    CU_ASSERT_EQUAL(st.timeouts_write, 1);
    CU_ASSERT(t_cut >= TIMEOUT - 20);
    CU_ASSERT(t_cut <= TIMEOUT + SLACK);
    CU_ASSERT(ended != 0);
    CU_ASSERT(total > 0);
    CU_ASSERT(total < 4u * 1024 * 1024); /* cut short: the 4 MiB body did not all go */
    CU_ASSERT_EQUAL(failed, 0);
    CU_ASSERT(served >= 5);
    close(fd);
    close_fd(fd2);
    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.stats.timeouts_write, 1);
}

/* ------------------------------------------------------------------ 3. idle timeout */

static void test_idle_timeout(void) {
    enum { TIMEOUT = 200 };
    ug_config cfg;
    cfg_init(&cfg);
    cfg.idle_timeout_ms = TIMEOUT;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    /* Requests 120 ms apart keep the connection: the idle timeout restarts each time. */
    int ok = 0;
    for (int i = 0; i < 5; i++) {
        ok += get_root_ok(fd);
        if (i < 4) usleep(120 * 1000);
    }
    CU_ASSERT_EQUAL(ok, 5);
    uint64_t t0 = tu_now_ms();
    CU_ASSERT_EQUAL(tu_wait_eof(fd, 1500), 1);
    uint64_t took = tu_now_ms() - t0;
    fprintf(stderr, "\n    idle: closed %llu ms after the last response\n",
            (unsigned long long)took);
    CU_ASSERT(took >= TIMEOUT - 20);
    CU_ASSERT(took <= 600);
    close_fd(fd);
    ts_stop(&sc);
    CU_ASSERT(sc.stats.timeouts_idle >= 1);
    CU_ASSERT_EQUAL(sc.stats.timeouts_read_header, 0);
}

/* ------------------------------------------------------------------ body timeout */

static const char POST_100[] = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n";

/* The body timeout bounds the gap between reads, not the whole body: a body arriving in
 * pieces 120 ms apart with a 200 ms timeout is read to the end and answered. */
static void test_body_timeout_gap_not_total(void) {
    enum { TIMEOUT = 200, GAP = 120 };
    ug_config cfg;
    cfg_init(&cfg);
    cfg.body_timeout_ms = TIMEOUT;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(send_str(fd, POST_100), 0);
    int sent_ok = 1;
    for (int i = 0; i < 10 && sent_ok; i++) {
        usleep(GAP * 1000);
        sent_ok = send_str(fd, "0123456789") == 0;
    }
    char body[128];
    int st = tu_read_response(fd, body, sizeof body, NULL);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(strlen(body), 100);
    close_fd(fd);
    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.stats.timeouts_body, 0);
    if (st != 200)
        fprintf(stderr,
                "\n    body gaps of %d ms under a %d ms body timeout: status %d, %llu "
                "body timeout(s)\n",
                GAP, TIMEOUT, st, (unsigned long long)sc.stats.timeouts_body);
}

/* A body that stops arriving: 408 and close at the body timeout. */
static void test_body_timeout_stall(void) {
    enum { TIMEOUT = 200 };
    ug_config cfg;
    cfg_init(&cfg);
    cfg.body_timeout_ms = TIMEOUT;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(send_str(fd, POST_100), 0);
    CU_ASSERT_EQUAL(send_str(fd, "0123456789"), 0);
    uint64_t t0 = tu_now_ms();
    const char *hdrs = NULL;
    CU_ASSERT_EQUAL(tu_read_response(fd, NULL, 0, &hdrs), 408);
    uint64_t took = tu_now_ms() - t0;
    CU_ASSERT(has_header(hdrs, "Connection: close"));
    CU_ASSERT(took >= TIMEOUT - 20);
    CU_ASSERT(took <= TIMEOUT + 400);
    CU_ASSERT_EQUAL(tu_wait_eof(fd, 2000), 1);
    close_fd(fd);
    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.stats.timeouts_body, 1);
}

/* ------------------------------------------------------------------ stale clock */

/* The read header timeout runs from the connection's arrival. When the loop has been
 * asleep longer than the timeout (no connection, nothing to wait for), the next connection
 * must still get its full timeout: a request sent at once is answered. */
static void test_header_timeout_after_quiet_loop(void) {
    enum { TIMEOUT = 200 };
    ug_config cfg;
    cfg_init(&cfg);
    cfg.read_header_timeout_ms = TIMEOUT;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    usleep(3 * TIMEOUT * 1000); /* the loop sleeps in wait() with no deadline */
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    const char *hdrs = NULL;
    char body[64];
    int st = send_str(fd, GET_ROOT) == 0 ? tu_read_response(fd, body, sizeof body, &hdrs) : -2;
    CU_ASSERT_EQUAL(st, 200);
    close_fd(fd);
    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.stats.timeouts_read_header, 0);
    if (st != 200)
        fprintf(stderr,
                "\n    first request after %d ms of quiet: status %d, %llu read header "
                "timeout(s)\n",
                3 * TIMEOUT, st, (unsigned long long)sc.stats.timeouts_read_header);
}

/* ------------------------------------------------------------------ 4. connection limit */

static void test_max_conns_backlog(void) {
    enum { MAX = 8, EXTRA = 4 };
    ug_config cfg;
    cfg_init(&cfg);
    cfg.max_conns = MAX;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    int fds[MAX], extra[EXTRA];
    int ok = 0;
    for (int i = 0; i < MAX; i++) {
        fds[i] = tu_connect(sc.port);
        CU_ASSERT_FATAL(fds[i] >= 0);
        ok += get_root_ok(fds[i]);
    }
    CU_ASSERT_EQUAL(ok, MAX);
    usleep(20 * 1000); /* the pause's cancel completes */
    /* Extra clients connect (the kernel's backlog) but are not accepted. */
    for (int i = 0; i < EXTRA; i++) {
        extra[i] = tu_connect(sc.port);
        CU_ASSERT_FATAL(extra[i] >= 0);
        CU_ASSERT_EQUAL(send_str(extra[i], GET_ROOT), 0);
    }
    int early = 0;
    uint64_t t0 = tu_now_ms();
    for (int i = 0; i < EXTRA; i++) {
        int left = 300 - (int)(tu_now_ms() - t0);
        early += readable_within(extra[i], left > 0 ? left : 0);
    }
    CU_ASSERT_EQUAL(early, 0);
    ug_stats st;
    ts_stats_now(&sc, &st);
    CU_ASSERT_EQUAL(st.conns_open, MAX);
    CU_ASSERT(st.accept_pauses >= 1);

    /* One slot frees: 7 is the low watermark (8 - max(8/16, 1)): the gate resumes and at
     * least one waiting client is served. */
    close_fd(fds[0]);
    fds[0] = -1;
    int first = -1;
    struct pollfd pf[EXTRA];
    for (int i = 0; i < EXTRA; i++) pf[i] = (struct pollfd){.fd = extra[i], .events = POLLIN};
    if (poll(pf, EXTRA, 2000) > 0)
        for (int i = 0; i < EXTRA && first < 0; i++)
            if (pf[i].revents) first = i;
    CU_ASSERT(first >= 0);
    /* Three more free: every waiting client is served, none reset. */
    for (int i = 1; i < EXTRA; i++) {
        close_fd(fds[i]);
        fds[i] = -1;
    }
    int served = 0;
    for (int i = 0; i < EXTRA; i++) {
        char body[64];
        int s = tu_read_response(extra[i], body, sizeof body, NULL);
        if (s == 200 && !strcmp(body, "Hello, World!"))
            served++;
        else
            fprintf(stderr, "\n    waiting client %d: status %d (%s)\n", i, s, strerror(errno));
    }
    CU_ASSERT_EQUAL(served, EXTRA);
    /* They are ordinary keep-alive connections now. */
    for (int i = 0; i < EXTRA; i++) CU_ASSERT(get_root_ok(extra[i]));
    for (int i = 0; i < EXTRA; i++) close_fd(extra[i]);
    for (int i = 0; i < MAX; i++) close_fd(fds[i]);
    ts_stop(&sc);
    CU_ASSERT(sc.stats.accept_pauses >= 1);
    CU_ASSERT(sc.stats.accept_resumes >= 1);
    CU_ASSERT_EQUAL(sc.stats.conns_accepted, MAX + EXTRA);
    CU_ASSERT_EQUAL(sc.stats.conns_reset, 0);
}

/* ------------------------------------------------------------------ 5. EMFILE */

static ug_server *volatile g_child_srv;

static void child_on_term(int sig) {
    (void)sig;
    ug_server *srv = g_child_srv;
    if (srv) ug_server_shutdown(srv, NULL); /* async-signal-safe */
}

static void silent_log(void *u, ug_log_level l, const char *m) {
    (void)u;
    (void)l;
    (void)m;
}

static ug_handler_result child_hello(ug_request *req, void *user) {
    (void)user;
    ug_resp_send(req, 200, "text/plain", "Hello, World!", 13);
    return UG_DONE;
}

#define CHILD_SPARE_FDS 24

/* The server in a child process, so that its descriptor limit is its own: the port goes to
 * the pipe, then (after SIGTERM ends the run) the counters. Exits with the run's result. */
static void child_main(int wfd) {
    alarm(60); /* the inherited watchdog handler: never outlive a broken parent */
    if (wfd != 3) {
        if (dup2(wfd, 3) < 0) _exit(10);
        wfd = 3;
    }
    close_range(4, ~0u, 0);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 4 + CHILD_SPARE_FDS; /* stdio, the pipe, and a few to spare */
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) _exit(11);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = child_on_term;
    sigaction(SIGTERM, &sa, NULL);

    ug_config cfg;
    ug_config_init(&cfg);
    cfg.port = 0;
    cfg.backend = g_backend;
    cfg.log = silent_log;
    ug_server *srv = NULL;
    uint16_t port = 0;
    if (ug_server_create(&srv, &cfg) == 0) {
        ug_route(srv, "GET", "/", UG_ROUTE_EXACT, child_hello, NULL);
        port = ug_server_port(srv);
    }
    g_child_srv = srv;
    if (write(wfd, &port, sizeof port) != sizeof port || !srv) _exit(12);
    int rc = ug_server_run(srv, NULL);
    ug_stats st;
    ug_server_stats(srv, &st);
    if (write(wfd, &st, sizeof st) != sizeof st) _exit(13);
    ug_server_free(srv);
    _exit(rc < 0 ? 14 : rc);
}

/* utime + stime of a process (all its threads), in ms. */
static long proc_cpu_ms(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (long)((ut + st) * 1000 / (unsigned long)(hz > 0 ? hz : 100));
}

static int read_full_timeout(int fd, void *buf, size_t len, int ms) {
    char *p = buf;
    uint64_t end = tu_now_ms() + (uint64_t)ms;
    while (len) {
        uint64_t now = tu_now_ms();
        if (now >= end || !readable_within(fd, (int)(end - now))) return -1;
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void test_emfile_pause_and_recover(void) {
    enum { N = 60 };
    int pp[2];
    CU_ASSERT_EQUAL_FATAL(pipe2(pp, O_CLOEXEC), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        close(pp[0]);
        child_main(pp[1]);
    }
    close(pp[1]);
    uint16_t port = 0;
    CU_ASSERT_EQUAL(read_full_timeout(pp[0], &port, sizeof port, 5000), 0);
    CU_ASSERT(port != 0);
    int fds[N], status[N];
    for (int i = 0; i < N; i++) fds[i] = -1, status[i] = 0;
    if (port == 0) goto done;

    int connected = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = tu_connect(port); /* completes in the kernel's backlog */
        if (fds[i] >= 0 && send_str(fds[i], GET_ROOT) == 0) connected++;
    }
    CU_ASSERT_EQUAL(connected, N);

    /* Read responses as they come; the server answers until it runs out of descriptors. */
    uint64_t start = tu_now_ms(), hard_end = start + 10000, last_new = start;
    int answered = 0, failed = 0, closing = 0, measured = 0;
    long cpu_ms = -1;
    int answered_at_limit = 0;
    while (answered + failed < N && tu_now_ms() < hard_end) {
        struct pollfd pf[N];
        int idx[N], n = 0;
        for (int i = 0; i < N; i++)
            if (fds[i] >= 0 && !status[i]) {
                pf[n] = (struct pollfd){.fd = fds[i], .events = POLLIN};
                idx[n++] = i;
            }
        int r = poll(pf, (nfds_t)n, 50);
        for (int j = 0; r > 0 && j < n; j++) {
            if (!pf[j].revents) continue;
            int i = idx[j];
            char body[64];
            int s = tu_read_response(fds[i], body, sizeof body, NULL);
            status[i] = s == 200 ? 200 : -1;
            if (s == 200)
                answered++;
            else
                failed++;
            last_new = tu_now_ms();
            if (closing || s != 200) { /* recovering: give the slot back at once */
                close_fd(fds[i]);
                fds[i] = -1;
            }
        }
        if (!closing && tu_now_ms() - last_new >= 300) {
            /* Nothing new for 300 ms: the server is at its descriptor limit. It must wait
             * quietly (accept retried on a timer), not spin. */
            answered_at_limit = answered;
            long c0 = proc_cpu_ms(pid);
            usleep(500 * 1000);
            long c1 = proc_cpu_ms(pid);
            cpu_ms = (c0 >= 0 && c1 >= 0) ? c1 - c0 : -1;
            measured = 1;
            /* Close the answered connections one by one: the server recovers. */
            closing = 1;
            for (int i = 0; i < N; i++)
                if (status[i] == 200 && fds[i] >= 0) {
                    close_fd(fds[i]);
                    fds[i] = -1;
                    usleep(1000);
                }
        }
    }
    fprintf(stderr,
            "\n    EMFILE: %d answered before the limit, child CPU %ld ms in 500 ms at the "
            "limit; %d/%d answered, %d failed in %llu ms\n",
            answered_at_limit, cpu_ms, answered, N, failed,
            (unsigned long long)(tu_now_ms() - start));
    CU_ASSERT(measured);
    CU_ASSERT(answered_at_limit > 0);
    CU_ASSERT(answered_at_limit < N); /* the limit was really hit */
    CU_ASSERT(cpu_ms >= 0);
    CU_ASSERT(cpu_ms < 100);
    CU_ASSERT_EQUAL(answered, N);
    CU_ASSERT_EQUAL(failed, 0);

done:
    for (int i = 0; i < N; i++) close_fd(fds[i]);
    kill(pid, SIGTERM);
    int wst = 0, reaped = 0;
    for (uint64_t end = tu_now_ms() + 5000; tu_now_ms() < end;) {
        if (waitpid(pid, &wst, WNOHANG) == pid) {
            reaped = 1;
            break;
        }
        usleep(5000);
    }
    if (!reaped) {
        kill(pid, SIGKILL);
        waitpid(pid, &wst, 0);
    }
    CU_ASSERT(reaped);
    CU_ASSERT(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    ug_stats cst;
    memset(&cst, 0, sizeof cst);
    if (reaped && read_full_timeout(pp[0], &cst, sizeof cst, 1000) == 0) {
        fprintf(stderr, "    child: accepted %llu, accept errors %llu, accept re-arms %llu\n",
                (unsigned long long)cst.conns_accepted, (unsigned long long)cst.accept_errors,
                (unsigned long long)cst.accept_rearms);
        CU_ASSERT(cst.accept_errors > 0);
        CU_ASSERT_EQUAL(cst.conns_accepted, N);
    } else {
        CU_FAIL("no counters from the child");
    }
    close(pp[0]);
}

/* ------------------------------------------------------------------ 6. handler timeout */

typedef struct late_answer {
    uint64_t id;
    const char *body;
    int found;
} late_answer;

static void answer_late(ug_server *srv, void *user) {
    late_answer *a = user;
    ug_request *req = ug_req_find(srv, a->id);
    a->found = req != NULL;
    if (req) ug_resp_send(req, 200, "text/plain", a->body, strlen(a->body));
}

static uint64_t wait_new_id(srv_ctx *sc, uint64_t old) {
    uint64_t end = tu_now_ms() + 2000, id;
    while ((id = __atomic_load_n(&sc->last_id, __ATOMIC_SEQ_CST)) == old && tu_now_ms() < end)
        usleep(500);
    return id;
}

static void test_handler_timeout_late_answer(void) {
    enum { TIMEOUT = 200 };
    ug_config cfg;
    cfg_init(&cfg);
    cfg.handler_timeout_ms = TIMEOUT;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(send_str(fd, "GET /late-id?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    uint64_t t0 = tu_now_ms();
    const char *hdrs = NULL;
    char body[64];
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, &hdrs), 503);
    uint64_t took = tu_now_ms() - t0;
    CU_ASSERT(!has_header(hdrs, "Connection: close")); /* keep-alive goes on */
    CU_ASSERT(took >= TIMEOUT - 20);
    CU_ASSERT(took <= TIMEOUT + 400);
    CU_ASSERT_EQUAL(__atomic_load_n(&sc.cancel_by_reason[UG_CANCEL_TIMEOUT], __ATOMIC_SEQ_CST), 1);
    CU_ASSERT_EQUAL(__atomic_load_n(&sc.cancelled, __ATOMIC_SEQ_CST), 1);
    CU_ASSERT_EQUAL(__atomic_load_n(&sc.last_reason, __ATOMIC_SEQ_CST), UG_CANCEL_TIMEOUT);
    uint64_t id1 = __atomic_load_n(&sc.last_id, __ATOMIC_SEQ_CST);
    CU_ASSERT(id1 != 0);

    /* The late answer finds nothing. */
    late_answer a1 = {id1, "too late", -1};
    CU_ASSERT_EQUAL(ts_on_req_loop(&sc, a1.id, answer_late, &a1), 0);
    CU_ASSERT_EQUAL(a1.found, 0);

    /* The connection moves on to another deferred request: the old id still finds nothing
     * (its answer must never reach the new request), the new one is answered. */
    CU_ASSERT_EQUAL(send_str(fd, "GET /late-id HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    uint64_t id2 = wait_new_id(&sc, id1);
    CU_ASSERT(id2 != id1);
    late_answer a2 = {id1, "too late", -1};
    CU_ASSERT_EQUAL(ts_on_req_loop(&sc, a2.id, answer_late, &a2), 0);
    CU_ASSERT_EQUAL(a2.found, 0);
    late_answer a3 = {id2, "second", -1};
    CU_ASSERT_EQUAL(ts_on_req_loop(&sc, a3.id, answer_late, &a3), 0);
    CU_ASSERT_EQUAL(a3.found, 1);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
    CU_ASSERT_STRING_EQUAL(body, "second");

    /* Same connection, an ordinary request. */
    CU_ASSERT(get_root_ok(fd));
    CU_ASSERT_EQUAL(readable_within(fd, 50), 0); /* nothing stray follows */
    ug_stats st;
    ts_stats_now(&sc, &st);
    CU_ASSERT_EQUAL(st.late_responses, 2);
    CU_ASSERT_EQUAL(st.timeouts_handler, 1);
    CU_ASSERT_EQUAL(st.inflight, 0);
    close_fd(fd);
    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.stats.timeouts_handler, 1);
    CU_ASSERT(sc.stats.late_responses >= 1);
    CU_ASSERT_EQUAL(sc.cancelled, 1);
}

/* ------------------------------------------------------------------ 7. size limits */

/* Send req on a new connection; expect status, Connection: close, and the close. */
static void expect_error(uint16_t port, const char *req, size_t len, int want, const char *what) {
    int fd = tu_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(tu_send_all(fd, req, len), 0);
    const char *hdrs = NULL;
    int st = tu_read_response(fd, NULL, 0, &hdrs);
    int has_close = has_header(hdrs, "Connection: close");
    int eof = tu_wait_eof(fd, 2000);
    if (st != want || !has_close || !eof)
        fprintf(stderr, "\n    %s: status %d (want %d), Connection: close %d, closed %d\n", what,
                st, want, has_close, eof);
    CU_ASSERT_EQUAL(st, want);
    CU_ASSERT(has_close);
    CU_ASSERT_EQUAL(eof, 1);
    close_fd(fd);
}

/* Send req on a new connection; expect 200 with the given body length. */
static void expect_ok(uint16_t port, const char *req, size_t len, size_t body_len,
                      const char *what) {
    int fd = tu_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(tu_send_all(fd, req, len), 0);
    static char body[4096];
    int st = tu_read_response(fd, body, sizeof body, NULL);
    if (st != 200 || strlen(body) != body_len)
        fprintf(stderr, "\n    %s: status %d, body %zu bytes (want 200, %zu)\n", what, st,
                strlen(body), body_len);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(strlen(body), body_len);
    close_fd(fd);
}

static size_t build_chunked(char *out, size_t cap, int nchunks, int chunk) {
    size_t n = (size_t)snprintf(
        out, cap, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < nchunks; i++) {
        n += (size_t)snprintf(out + n, cap - n, "%x\r\n", chunk);
        memset(out + n, 'b', (size_t)chunk);
        n += (size_t)chunk;
        n += (size_t)snprintf(out + n, cap - n, "\r\n");
    }
    n += (size_t)snprintf(out + n, cap - n, "0\r\n\r\n");
    return n;
}

static void limits_cfg(ug_config *cfg) {
    cfg_init(cfg);
    cfg->max_header_bytes = 1024;
    cfg->max_headers = 4;
    cfg->max_uri_bytes = 256;
    cfg->max_body_bytes = 1000;
}

static void test_each_limit_status(void) {
    ug_config cfg;
    limits_cfg(&cfg);
    srv_ctx sc;
    ts_start(&sc, &cfg);
    static char req[8192];
    size_t n;

    /* header section over 1024 bytes → 431 */
    n = (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: t\r\nX-big: ");
    memset(req + n, 'a', 1100);
    n += 1100;
    n += (size_t)snprintf(req + n, sizeof req - n, "\r\n\r\n");
    expect_error(sc.port, req, n, 431, "header bytes");
    /* under it: served */
    n = (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: t\r\nX-big: ");
    memset(req + n, 'a', 900);
    n += 900;
    n += (size_t)snprintf(req + n, sizeof req - n, "\r\n\r\n");
    expect_ok(sc.port, req, n, 13, "900-byte header");

    /* 5 header fields (max 4) → 431; exactly 4: served */
    n = (size_t)snprintf(req, sizeof req,
                         "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n");
    expect_error(sc.port, req, n, 431, "5 header fields");
    n = (size_t)snprintf(req, sizeof req,
                         "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 1\r\nC: 1\r\n\r\n");
    expect_ok(sc.port, req, n, 13, "4 header fields");

    /* request-target over 256 → 414; exactly 256: served (/path echoes the target) */
    n = (size_t)snprintf(req, sizeof req, "GET /path/");
    memset(req + n, 'u', 257 - 6);
    n += 257 - 6;
    n += (size_t)snprintf(req + n, sizeof req - n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_error(sc.port, req, n, 414, "257-byte target");
    n = (size_t)snprintf(req, sizeof req, "GET /path/");
    memset(req + n, 'u', 256 - 6);
    n += 256 - 6;
    n += (size_t)snprintf(req + n, sizeof req - n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_ok(sc.port, req, n, 256, "256-byte target");

    /* body over 1000: Content-Length 2000 (body sent too) → 413 */
    n = (size_t)snprintf(req, sizeof req,
                         "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n");
    memset(req + n, 'b', 2000);
    n += 2000;
    expect_error(sc.port, req, n, 413, "Content-Length 2000");
    /* chunked, 4 x 500 → 413 */
    n = build_chunked(req, sizeof req, 4, 500);
    expect_error(sc.port, req, n, 413, "chunked 2000");
    /* exactly 1000, both framings: served */
    n = (size_t)snprintf(req, sizeof req,
                         "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n");
    memset(req + n, 'b', 1000);
    n += 1000;
    expect_ok(sc.port, req, n, 1000, "Content-Length 1000");
    n = build_chunked(req, sizeof req, 2, 500);
    expect_ok(sc.port, req, n, 1000, "chunked 1000");

    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.stats.limit_header_bytes, 1);
    CU_ASSERT_EQUAL(sc.stats.limit_headers, 1);
    CU_ASSERT_EQUAL(sc.stats.limit_uri, 1);
    CU_ASSERT_EQUAL(sc.stats.limit_body, 2);
    CU_ASSERT_EQUAL(sc.stats.bad_requests, 5);
    CU_ASSERT_EQUAL(sc.stats.conns_reset, 0);
}

/* A header section over max_header_bytes is a header-bytes hit even when the request also
 * has exactly max_headers fields (the count is at the limit, not over it). */
static void test_header_bytes_counted_with_max_fields(void) {
    ug_config cfg;
    limits_cfg(&cfg);
    srv_ctx sc;
    ts_start(&sc, &cfg);
    static char req[4096];
    size_t n =
        (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 1\r\nX-big: ");
    memset(req + n, 'a', 1100);
    n += 1100;
    n += (size_t)snprintf(req + n, sizeof req - n, "\r\n\r\n");
    expect_error(sc.port, req, n, 431, "4 fields, header bytes over");
    ts_stop(&sc);
    if (sc.stats.limit_header_bytes != 1)
        fprintf(stderr, "\n    limit_header_bytes %llu, limit_headers %llu\n",
                (unsigned long long)sc.stats.limit_header_bytes,
                (unsigned long long)sc.stats.limit_headers);
    CU_ASSERT_EQUAL(sc.stats.limit_header_bytes, 1);
    CU_ASSERT_EQUAL(sc.stats.limit_headers, 0);
}

/* ------------------------------------------------------------------ 8. load shedding */

static void test_shedding_max_inflight(void) {
    enum { N = 3 };
    ug_config cfg;
    cfg_init(&cfg);
    cfg.max_inflight = 2;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = tu_connect(sc.port);
        CU_ASSERT_FATAL(fds[i] >= 0);
    }
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(send_str(fds[i], "GET /late?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    int n200 = 0, n503 = 0, retry_after = 0, shed = -1;
    for (int i = 0; i < N; i++) {
        const char *hdrs = NULL;
        char body[64];
        int st = tu_read_response(fds[i], body, sizeof body, &hdrs);
        if (st == 200 && !strcmp(body, "late")) n200++;
        if (st == 503) {
            n503++;
            shed = i;
            retry_after += has_header(hdrs, "\r\nRetry-After: 1\r\n");
        }
    }
    CU_ASSERT_EQUAL(n200, 2);
    CU_ASSERT_EQUAL(n503, 1);
    CU_ASSERT_EQUAL(retry_after, 1);
    /* The shed client's connection stays usable: a retry is served. */
    if (shed >= 0) CU_ASSERT(get_root_ok(fds[shed]));
    ug_stats st;
    ts_stats_now(&sc, &st);
    CU_ASSERT_EQUAL(st.inflight, 0);
    for (int i = 0; i < N; i++) close_fd(fds[i]);
    ts_stop(&sc);
    CU_ASSERT_EQUAL(sc.stats.shed, 1);
}

/* ------------------------------------------------------------------ 9. shutdown while paused */

static void test_shutdown_while_paused(void) {
    enum { MAX = 4, WAITING = 2 };
    ug_config cfg;
    cfg_init(&cfg);
    cfg.max_conns = MAX;
    cfg.linger_ms = 300;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    int open_fds[MAX], wait_fds[WAITING];
    int ok = 0;
    for (int i = 0; i < MAX; i++) {
        open_fds[i] = tu_connect(sc.port);
        CU_ASSERT_FATAL(open_fds[i] >= 0);
        ok += get_root_ok(open_fds[i]);
    }
    CU_ASSERT_EQUAL(ok, MAX);
    usleep(20 * 1000);
    for (int i = 0; i < WAITING; i++) {
        wait_fds[i] = tu_connect(sc.port);
        CU_ASSERT_FATAL(wait_fds[i] >= 0);
        CU_ASSERT_EQUAL(send_str(wait_fds[i], GET_ROOT), 0);
    }
    int early = 0;
    for (int i = 0; i < WAITING; i++) early += readable_within(wait_fds[i], 100);
    CU_ASSERT_EQUAL(early, 0); /* paused: still in the backlog */
    ug_stats st;
    ts_stats_now(&sc, &st);
    CU_ASSERT(st.accept_pauses >= 1);

    uint64_t t0 = tu_now_ms();
    ug_shutdown_opts o = {.drain_timeout_ms = 2000};
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    /* The waiting clients were accepted by the kernel before the close point: the backlog
     * drain takes them and answers them with Connection: close. Never a reset. */
    int served = 0;
    for (int i = 0; i < WAITING; i++) {
        const char *hdrs = NULL;
        char body[64];
        errno = 0;
        int s = tu_read_response(wait_fds[i], body, sizeof body, &hdrs);
        int cl = has_header(hdrs, "Connection: close");
        if (s == 200 && cl) {
            served++;
            CU_ASSERT_EQUAL(tu_wait_eof(wait_fds[i], 2000), 1);
        } else {
            fprintf(stderr, "\n    waiting client %d: status %d, close %d (%s)\n", i, s, cl,
                    strerror(errno));
        }
    }
    CU_ASSERT_EQUAL(served, WAITING);
    /* The open idle ones linger and close. */
    int closed = 0;
    for (int i = 0; i < MAX; i++) {
        closed += tu_wait_eof(open_fds[i], 3000);
        close_fd(open_fds[i]);
    }
    CU_ASSERT_EQUAL(closed, MAX);
    for (int i = 0; i < WAITING; i++) close_fd(wait_fds[i]);
    ts_join(&sc);
    uint64_t took = tu_now_ms() - t0;
    fprintf(stderr, "\n    shutdown while paused: run %d in %llu ms, %llu taken while closing\n",
            sc.run_rc, (unsigned long long)took, (unsigned long long)sc.report.accepted_at_close);
    CU_ASSERT_EQUAL(sc.run_rc, 0);
    CU_ASSERT_EQUAL(sc.report.accepted_after_close, 0);
    CU_ASSERT_EQUAL(sc.report.accepted_at_close, WAITING);
    CU_ASSERT_EQUAL(sc.report.conns_forced, 0);
    CU_ASSERT_EQUAL(ug_server_state(sc.srv), UG_GATE_CLOSED);
    CU_ASSERT_EQUAL(sc.stats.conns_reset, 0);
    CU_ASSERT(took < 2000);
    ug_server_free(sc.srv);
}

/* ------------------------------------------------------------------ registration */

static void register_suites(void) {
    CU_pSuite s =
        CU_add_suite(g_backend == UG_BACKEND_URING ? "limits-uring" : "limits-epoll", NULL, NULL);
    CU_add_test(s, "slowloris: 500 dribbling connections cut at the read header timeout",
                test_slowloris_500);
    CU_add_test(s, "read header timeout counts from arrival after a quiet loop (stale clock)",
                test_header_timeout_after_quiet_loop);
    CU_add_test(s, "write timeout cuts a client that stops reading",
                test_write_timeout_slow_reader);
    CU_add_test(s, "idle keep-alive connection closed at the idle timeout", test_idle_timeout);
    CU_add_test(s, "body timeout is a gap: 120 ms gaps under 200 ms are served (stale clock)",
                test_body_timeout_gap_not_total);
    CU_add_test(s, "body timeout: a stalled body gets 408", test_body_timeout_stall);
    CU_add_test(s, "max_conns: extra clients wait in the backlog, then are served",
                test_max_conns_backlog);
    CU_add_test(s, "EMFILE pauses without spinning and recovers (child process)",
                test_emfile_pause_and_recover);
    CU_add_test(s, "handler timeout: 503, cancel fires, late answer dropped",
                test_handler_timeout_late_answer);
    CU_add_test(s, "each size limit answers its status and closes", test_each_limit_status);
    CU_add_test(s, "431 with exactly max_headers fields counts limit_header_bytes",
                test_header_bytes_counted_with_max_fields);
    CU_add_test(s, "max_inflight sheds with 503 + Retry-After", test_shedding_max_inflight);
    CU_add_test(s, "shutdown while the gate is paused at max_conns", test_shutdown_while_paused);
}

int main(int argc, char **argv) {
    ts_init(argc, argv);
    return tu_main(register_suites, 280);
}
