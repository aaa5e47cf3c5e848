/*
 * ugate-load: a fixed number of keep-alive requests, for per-request costs that do not depend
 * on time (tools/bench --cost: instructions under callgrind, syscalls under perf or strace).
 *
 *   ugate-load --port P [--host 127.0.0.1] [--conns 1] [--requests 10000] [--timeout-ms 60000]
 *
 * Opens --conns keep-alive connections to HOST:PORT (all connected before the first request),
 * then sends "GET / HTTP/1.1\r\nHost: HOST:PORT\r\n\r\n" on each, one request outstanding per
 * connection: the next is sent once the whole response (status line, headers, Content-Length
 * bytes of body) has been read. The --requests are spread over the connections (the first
 * requests % conns get one more), so exactly --requests are sent and answered; then every
 * connection is closed. wrk cannot do that (it runs for a time, and what it has in flight when
 * it stops varies). Single-threaded, epoll; stops by itself after --timeout-ms whatever
 * happened. Loopback only: --host must be in 127.0.0.0/8.
 *
 * Prints a machine-readable line:
 *   RESULT requests= ok= non200= errors= elapsed_ms= rps=
 * ok: responses read (200 or not); non200: those whose status was not 200; errors:
 * connections that failed (refused, reset, closed by the server, malformed response).
 * Exit status: 0 every request answered with a 200; 1 usage or system error; 2 otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 20000
#define BUF 8192

struct conn {
    int fd;
    long left;   /* requests still to send */
    size_t sent; /* bytes of the current request written */
    int waiting; /* a request is written, its response not yet whole */
    size_t len;  /* bytes in buf */
    char buf[BUF];
};

static char req[256];
static size_t req_len;
static long n_ok, n_non200, n_err;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void usage(FILE *f) {
    fprintf(f, "usage: ugate-load --port P [--host 127.0.0.1] [--conns 1] [--requests 10000]"
               " [--timeout-ms 60000]\n");
}

static long num(const char *s, const char *what, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "ugate-load: bad %s: %s (%ld to %ld)\n", what, s, lo, hi);
        exit(1);
    }
    return v;
}

static void fail(struct conn *c, int ep) {
    if (c->fd < 0) return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    n_err++;
}

static void finish(struct conn *c, int ep) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

/* The length of the whole response at the head of buf, 0 while incomplete, -1 if malformed;
 * *status gets its status code. */
static long response_len(const struct conn *c, int *status) {
    const char *b = c->buf, *end = NULL;
    for (size_t i = 3; i < c->len; i++)
        if (b[i] == '\n' && b[i - 1] == '\r' && b[i - 2] == '\n' && b[i - 3] == '\r') {
            end = b + i + 1;
            break;
        }
    if (!end) return c->len >= BUF ? -1 : 0;
    if (end - b < 12 || memcmp(b, "HTTP/1.", 7)) return -1;
    *status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    long body = 0;
    for (const char *p = b; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        static const char cl[] = "content-length:";
        if ((size_t)(nl - p) > sizeof cl - 1 && !strncasecmp(p, cl, sizeof cl - 1)) {
            body = strtol(p + sizeof cl - 1, NULL, 10);
            if (body < 0 || body > BUF) return -1;
        }
        p = nl + 1;
    }
    long total = (long)(end - b) + body;
    if (total > BUF) return -1;
    return (long)c->len >= total ? total : 0;
}

static int send_req(struct conn *c, int ep) {
    while (c->sent < req_len) {
        ssize_t w = send(c->fd, req + c->sent, req_len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) { /* the loopback socket is full: wait for room */
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            return 0;
        }
        if (w <= 0) return -1;
        c->sent += (size_t)w;
    }
    return 0;
}

static void start_next(struct conn *c, int ep) {
    if (c->left == 0) {
        finish(c, ep);
        return;
    }
    c->left--;
    c->sent = 0;
    c->waiting = 1;
    if (send_req(c, ep) < 0) fail(c, ep);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    long port = -1, conns = 1, requests = 10000, timeout_ms = 60000;
    enum { O_PORT = 256, O_HOST, O_CONNS, O_REQS, O_TIMEOUT, O_HELP };
    static const struct option opts[] = {
        {"port", required_argument, 0, O_PORT},
        {"host", required_argument, 0, O_HOST},
        {"conns", required_argument, 0, O_CONNS},
        {"requests", required_argument, 0, O_REQS},
        {"timeout-ms", required_argument, 0, O_TIMEOUT},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_PORT:
            port = num(optarg, "--port", 1, 65535);
            break;
        case O_HOST:
            host = optarg;
            break;
        case O_CONNS:
            conns = num(optarg, "--conns", 1, MAX_CONNS);
            break;
        case O_REQS:
            requests = num(optarg, "--requests", 1, 1000000000L);
            break;
        case O_TIMEOUT:
            timeout_ms = num(optarg, "--timeout-ms", 1, 3600000L);
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (port < 0 || optind < argc) {
        usage(stderr);
        return 1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 || (ntohl(sa.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "ugate-load: --host must be an IPv4 loopback address (127.0.0.0/8)\n");
        return 1;
    }
    if (conns > requests) conns = requests;
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < (rlim_t)conns + 16) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)conns + 16 ? rl.rlim_max : (rlim_t)conns + 16;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    req_len =
        (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s:%ld\r\n\r\n", host, port);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    int ep = epoll_create1(0);
    if (!cs || ep < 0) {
        perror("ugate-load");
        return 1;
    }
    for (long i = 0; i < conns; i++) {
        struct conn *c = &cs[i];
        c->left = requests / conns + (i < requests % conns);
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0) {
            perror("ugate-load: socket");
            return 1;
        }
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            fprintf(stderr, "ugate-load: connect %s:%ld: %s\n", host, port, strerror(errno));
            close(c->fd);
            c->fd = -1;
            n_err++;
            continue;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    double t0 = now_ms(), deadline = t0 + (double)timeout_ms;
    long open = 0;
    for (long i = 0; i < conns; i++)
        if (cs[i].fd >= 0) {
            start_next(&cs[i], ep);
            if (cs[i].fd >= 0) open++;
        }
    struct epoll_event evs[256];
    while (open > 0) {
        double left = deadline - now_ms();
        if (left <= 0) {
            fprintf(stderr, "ugate-load: timed out after %ld ms\n", timeout_ms);
            break;
        }
        int n = epoll_wait(ep, evs, 256, left > 1000 ? 1000 : (int)left + 1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            perror("ugate-load: epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            if (c->fd < 0) continue;
            if (evs[k].events & EPOLLOUT) {
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                if (send_req(c, ep) < 0) {
                    fail(c, ep);
                    open--;
                    continue;
                }
            }
            if (!(evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            ssize_t r = recv(c->fd, c->buf + c->len, BUF - c->len, MSG_DONTWAIT);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0 || !c->waiting) { /* reset, closed, or bytes nobody asked for */
                fail(c, ep);
                open--;
                continue;
            }
            c->len += (size_t)r;
            int status = 0;
            long whole = response_len(c, &status);
            if (whole < 0) {
                fail(c, ep);
                open--;
                continue;
            }
            if (whole == 0) continue;
            n_ok++;
            if (status != 200) n_non200++;
            if ((size_t)whole < c->len) { /* more than one response: not asked for */
                fail(c, ep);
                open--;
                continue;
            }
            c->len = 0;
            c->waiting = 0;
            start_next(c, ep);
            if (c->fd < 0) open--;
        }
    }
    double ms = now_ms() - t0;
    for (long i = 0; i < conns; i++)
        if (cs[i].fd >= 0) close(cs[i].fd);
    free(cs);
    close(ep);
    printf("RESULT requests=%ld ok=%ld non200=%ld errors=%ld elapsed_ms=%.1f rps=%.0f\n", requests,
           n_ok, n_non200, n_err, ms, ms > 0 ? n_ok / ms * 1e3 : 0.0);
    return n_ok == requests && n_non200 == 0 && n_err == 0 ? 0 : 2;
}
