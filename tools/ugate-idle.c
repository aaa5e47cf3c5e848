/*
 * ugate-idle: user-space memory per idle keep-alive connection of a running HTTP server.
 *
 *   ugate-idle --pid PID [--pid PID2 ...] --port PORT [--conns 10000] [--hold-ms 0]
 *
 * Reads the server's memory (VmRSS from /proc/PID/status; Private_Dirty and Anonymous from
 * /proc/PID/smaps_rollup), opens N connections to HOST:PORT, sends one "GET / HTTP/1.1" on
 * each and reads the whole response, so that every connection has been through a request and
 * is now an idle keep-alive connection. After --settle-ms it reads the memory again and prints
 * the growth per connection for each measure. Several --pid options are summed (e.g. an nginx
 * master and its worker).
 *
 * Round 1, on the server as it is (freshly started, one request served), opens the N
 * connections in two halves and reads the memory before, between and after:
 *   average  = (after - before) / N: everything the server had to find for N idle
 *              connections, including fixed pools the first connections touched.
 *   marginal = (after - half) / (N - N/2): the cost of one more idle connection once such
 *              pools are touched (a provided-buffer ring whose 4096 buffers are taken in turn
 *              is touched whole by the first 4096 connections, and is not per-connection).
 * Round 2 "rewarm" (skip with --no-rewarm): all connections are closed, the server gets
 * --settle-ms to reap them, and N are opened again: (after - before) / N. About 0 where freed
 * memory stays in the process and is reused; about the round-1 figure where the server gives
 * it back to the system and takes it again (nginx does).
 * The connections of the last round are held for --hold-ms, then closed.
 *
 * Counted: pages the server process touched (user space). Not counted: kernel socket memory,
 * io_uring kernel state, and memory the server touched before the first reading (pre-touched
 * pools show up in the "before" figures, which are printed too).
 *
 * The last line is machine-readable (bytes per connection; "-" where not measured):
 *   RESULT conns=N idle1=K first_rss= first_dirty= first_anon= marg_rss= marg_dirty=
 *          marg_anon= idle2=K rewarm_rss= rewarm_dirty= rewarm_anon=
 * Exit status: 0 ok; 1 usage or system error; 2 fewer than N connections became idle
 * keep-alive connections (the figures are then per connection actually reached).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
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

#define MAX_PIDS 16
#define RESP_MAX 4096 /* bytes of one response we are willing to buffer */

enum cstate { C_FREE, C_CONNECTING, C_READING, C_IDLE, C_DEAD };

struct conn {
    int fd;
    enum cstate st;
    unsigned got;  /* bytes of response buffered */
    unsigned sent; /* bytes of request sent */
    char *buf;     /* response bytes, only while C_READING */
};

struct mem {
    long long rss, dirty, anon; /* bytes; dirty and anon are -1 when smaps_rollup is unreadable */
};

struct opts {
    int pids[MAX_PIDS];
    int npids;
    const char *host;
    int port;
    int conns;
    int hold_ms;
    int settle_ms;
    int timeout_ms;
    int window;
    int sources;
    int rewarm;
    const char *path;
};

static struct opts o = {
    .host = "127.0.0.1",
    .conns = 10000,
    .settle_ms = 1000,
    .timeout_ms = 30000,
    .window = 256,
    .sources = 0,
    .rewarm = 1,
    .path = "/",
};

static char req[512];
static size_t req_len;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ugate-idle: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

/* Value in kB of "Key:   123 kB" in a /proc file, or -1. */
static long long proc_kb(int pid, const char *file, const char *key) {
    char path[64], line[256];
    size_t kl = strlen(key);
    long long v = -1;
    snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = strtoll(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static int read_mem(struct mem *m) {
    memset(m, 0, sizeof *m);
    for (int i = 0; i < o.npids; i++) {
        long long rss = proc_kb(o.pids[i], "status", "VmRSS");
        long long dirty = proc_kb(o.pids[i], "smaps_rollup", "Private_Dirty");
        long long anon = proc_kb(o.pids[i], "smaps_rollup", "Anonymous");
        if (rss < 0) return -1;
        m->rss += rss * 1024;
        /* smaps_rollup needs ptrace access to the process (root, or the same user) */
        if (dirty < 0 || anon < 0 || m->dirty < 0)
            m->dirty = m->anon = -1;
        else
            m->dirty += dirty * 1024, m->anon += anon * 1024;
    }
    return 0;
}

static int pids_alive(void) {
    for (int i = 0; i < o.npids; i++)
        if (proc_kb(o.pids[i], "status", "VmRSS") < 0) return 0;
    return 1;
}

/* Raise RLIMIT_NOFILE so that `need` descriptors fit; exit with a clear message if not. */
static void raise_nofile(rlim_t need) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) die("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur >= need) return;
    if (rl.rlim_max < need) {
        /* root (CAP_SYS_RESOURCE) may raise the hard limit up to fs.nr_open */
        struct rlimit up = {need, need};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) return;
        die("need %llu file descriptors for %d connections, but RLIMIT_NOFILE hard limit is "
            "%llu (raising it failed: %s); raise it (ulimit -Hn %llu, needs CAP_SYS_RESOURCE) or "
            "lower --conns",
            (unsigned long long)need, o.conns, (unsigned long long)rl.rlim_max, strerror(errno),
            (unsigned long long)need);
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl)) die("setrlimit: %s", strerror(errno));
}

/* Returns 1 when buf[0..len) holds a whole response, 0 if more is needed, -1 if bad.
 * *keep is set to 0 if the server announced it will close the connection; *status to the
 * status code. */
static int response_complete(const char *buf, unsigned len, int *status, int *keep) {
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return len >= RESP_MAX ? -1 : 0;
    size_t hlen = (size_t)(end - buf) + 4;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7)) return -1;
    *status = atoi(buf + 9);
    *keep = buf[7] == '1'; /* HTTP/1.1 default keep-alive, 1.0 default close */
    long long clen = -1;
    int chunked = 0;
    for (const char *p = memchr(buf, '\n', hlen); p && p < end; p = memchr(p, '\n', end - p)) {
        p++;
        if (!strncasecmp(p, "content-length:", 15))
            clen = strtoll(p + 15, NULL, 10);
        else if (!strncasecmp(p, "transfer-encoding:", 18)) {
            const char *q = p + 18, *eol = memchr(q, '\r', end + 2 - q);
            if (eol && memmem(q, eol - q, "chunked", 7)) chunked = 1;
        } else if (!strncasecmp(p, "connection:", 11)) {
            const char *q = p + 11, *eol = memchr(q, '\r', end + 2 - q);
            if (eol && memmem(q, eol - q, "close", 5)) *keep = 0;
            if (eol && memmem(q, eol - q, "keep-alive", 10)) *keep = 1;
        }
    }
    if (*status == 204 || *status == 304 || (*status >= 100 && *status < 200)) clen = 0;
    if (chunked) /* good enough for small bodies: ends with the last-chunk and no trailers */
        return len >= hlen + 5 && !memcmp(buf + len - 5, "0\r\n\r\n", 5) ? 1 : 0;
    if (clen < 0) return -1; /* close-delimited: not a keep-alive response */
    if ((long long)len > (long long)hlen + clen) return -1; /* unsolicited bytes */
    return (long long)len == (long long)hlen + clen;
}

struct round_stats {
    int failed;  /* connect errors, resets, bad responses */
    int non2xx;  /* responses with a status outside 2xx */
    int noka;    /* responses that announce Connection: close */
    int timeout; /* not done when the round's deadline passed */
    long long ms;
};

static void conn_kill(int ep, struct conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->st = C_DEAD;
}

static int conn_start(int ep, struct conn *c, int idx, const struct sockaddr_in *dst) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (o.sources > 1) {
        /* spread over 127.0.0.1..127.0.0.K so that more than ~28k ports are available */
        int one = 1;
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(idx % o.sources));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *)&src, sizeof src)) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->got = c->sent = 0;
    c->st = C_CONNECTING;
    c->buf = NULL;
    if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        c->fd = -1;
        c->st = C_DEAD;
        return -e;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)idx};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) die("epoll_ctl: %s", strerror(errno));
    return 0;
}

/* Open connections cs[from..to), request on each, until all are idle or the deadline passes.
 * Adds to *st. */
static void open_conns(int ep, struct conn *cs, int from, int to, const struct sockaddr_in *dst,
                       struct round_stats *st) {
    long long t0 = now_ms(), deadline = t0 + o.timeout_ms;
    int next = from, inflight = 0, done = 0;
    struct epoll_event evs[256];
    int first_err = 0;

    while (done < to - from) {
        while (next < to && inflight < o.window) {
            int r = conn_start(ep, &cs[next], next, dst);
            next++;
            if (r < 0) {
                if (!first_err) first_err = -r;
                if (r == -EMFILE || r == -ENFILE)
                    die("socket: %s after %d connections", strerror(-r), next - 1);
                st->failed++;
                done++;
                continue;
            }
            inflight++;
        }
        long long left = deadline - now_ms();
        if (left <= 0) break;
        int n = epoll_wait(ep, evs, 256, left > 200 ? 200 : (int)left);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            struct conn *c = &cs[evs[i].data.u32];
            uint32_t e = evs[i].events;
            if (c->st == C_IDLE) { /* server closed (or wrote to) an idle connection */
                conn_kill(ep, c);
                st->failed++;
                continue;
            }
            if (c->st != C_CONNECTING && c->st != C_READING) continue;
            if (c->st == C_CONNECTING && (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    if (!first_err) first_err = err;
                    goto fail;
                }
                ssize_t w = send(c->fd, req + c->sent, req_len - c->sent, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) {
                    if (!first_err) first_err = errno;
                    goto fail;
                }
                if (w > 0) c->sent += (unsigned)w;
                if (c->sent < req_len) continue;
                c->st = C_READING;
                c->buf = malloc(RESP_MAX);
                if (!c->buf) die("out of memory");
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data = evs[i].data};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            if (c->st == C_READING && (e & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))) {
                ssize_t r = recv(c->fd, c->buf + c->got, RESP_MAX - c->got, 0);
                if (r < 0 && errno == EAGAIN) continue;
                if (r <= 0) {
                    if (r < 0 && !first_err) first_err = errno;
                    goto fail;
                }
                c->got += (unsigned)r;
                int status = 0, keep = 1;
                int k = response_complete(c->buf, c->got, &status, &keep);
                if (k == 0) continue;
                if (k < 0) goto fail;
                if (status < 200 || status > 299) st->non2xx++;
                if (!keep) {
                    st->noka++;
                    goto fail;
                }
                free(c->buf);
                c->buf = NULL;
                c->st = C_IDLE;
                inflight--;
                done++;
                /* keep watching: an event on an idle connection means the server dropped it */
                continue;
            }
            continue;
        fail:
            conn_kill(ep, c);
            st->failed++;
            inflight--;
            done++;
        }
    }
    for (int i = from; i < next; i++) {
        if (cs[i].st == C_CONNECTING || cs[i].st == C_READING) {
            conn_kill(ep, &cs[i]);
            st->timeout++;
        }
    }
    st->timeout += to - next;
    st->ms += now_ms() - t0;
    if (first_err) fprintf(stderr, "ugate-idle: first socket error: %s\n", strerror(first_err));
}

/* Wait ms while watching idle connections; returns how many the server closed meanwhile. */
static int watch_idle(int ep, struct conn *cs, int ms) {
    long long deadline = now_ms() + ms;
    int lost = 0;
    struct epoll_event evs[256];
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0) break;
        int n = epoll_wait(ep, evs, 256, left > 1000 ? 1000 : (int)left);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            struct conn *c = &cs[evs[i].data.u32];
            if (c->st == C_IDLE) {
                conn_kill(ep, c);
                lost++;
            }
        }
    }
    return lost;
}

static void close_all(int ep, struct conn *cs) {
    for (int i = 0; i < o.conns; i++) {
        if (cs[i].fd >= 0) conn_kill(ep, &cs[i]);
        cs[i].st = C_FREE;
    }
}

/* "%+.1f" of v, or `none` when v is NAN (not measured). */
static const char *fmt(char *buf, size_t len, const char *f, double v, const char *none) {
    if (isnan(v))
        snprintf(buf, len, "%s", none);
    else
        snprintf(buf, len, f, v);
    return buf;
}

static void print_mem(const char *what, const struct mem *m) {
    char a[32], b[32];
    printf("  %-7s VmRSS %9.1f KiB   Private_Dirty %9s KiB   Anonymous %9s KiB\n", what,
           m->rss / 1024.0, fmt(a, sizeof a, "%.1f", m->dirty < 0 ? NAN : m->dirty / 1024.0, "n/a"),
           fmt(b, sizeof b, "%.1f", m->anon < 0 ? NAN : m->anon / 1024.0, "n/a"));
}

static int count_idle(const struct conn *cs) {
    int n = 0;
    for (int i = 0; i < o.conns; i++) n += cs[i].st == C_IDLE;
    return n;
}

static void per_conn(const struct mem *a, const struct mem *b, int n, double out[3]) {
    int smaps = a->dirty >= 0 && b->dirty >= 0;
    out[0] = n > 0 ? (double)(b->rss - a->rss) / n : NAN;
    out[1] = n > 0 && smaps ? (double)(b->dirty - a->dirty) / n : NAN;
    out[2] = n > 0 && smaps ? (double)(b->anon - a->anon) / n : NAN;
}

static void print_per_conn(const char *what, const double v[3]) {
    char a[32], b[32], c[32];
    printf("  %-26s VmRSS %9s B   Private_Dirty %9s B   Anonymous %9s B\n", what,
           fmt(a, sizeof a, "%+.1f", v[0], "n/a"), fmt(b, sizeof b, "%+.1f", v[1], "n/a"),
           fmt(c, sizeof c, "%+.1f", v[2], "n/a"));
}

/*
 * One round: opens o.conns connections and reads the memory before and after. With split,
 * the connections are opened in two halves with a reading in between, so that the second half
 * gives the marginal cost of one more idle connection: fixed pools that the first connections
 * touch (e.g. a provided-buffer ring whose buffers are used round-robin) are then not spread
 * over the connections as if each held a share. avg: (after - before) / idle; marg: (after -
 * mid) / (idle connections added by the second half). Returns the idle connections at the end.
 */
static int measure_round(int ep, struct conn *cs, const struct sockaddr_in *dst, const char *name,
                         int split, double avg[3], double marg[3]) {
    struct mem before, mid, after;
    struct round_stats st;
    int half = split ? o.conns / 2 : o.conns, lost = 0, idle_mid = 0;
    memset(&st, 0, sizeof st);
    if (read_mem(&before)) die("cannot read /proc/%d/status: server gone?", o.pids[0]);
    open_conns(ep, cs, 0, half, dst, &st);
    if (split) {
        lost += watch_idle(ep, cs, o.settle_ms);
        idle_mid = count_idle(cs);
        if (read_mem(&mid)) die("cannot read /proc/%d/status: server gone?", o.pids[0]);
        open_conns(ep, cs, half, o.conns, dst, &st);
    }
    lost += watch_idle(ep, cs, o.settle_ms);
    int idle = count_idle(cs);
    if (read_mem(&after)) die("cannot read /proc/%d/status: server gone?", o.pids[0]);
    printf("round %s: %d/%d idle keep-alive connections (set up in %lld ms)", name, idle, o.conns,
           st.ms);
    if (st.failed || st.timeout || lost || st.non2xx)
        printf(" (failed %d, timed out %d, closed by server while idle %d, non-2xx %d, "
               "Connection: close %d)",
               st.failed, st.timeout, lost, st.non2xx, st.noka);
    printf("\n");
    print_mem("before", &before);
    if (split) print_mem("half", &mid);
    print_mem("after", &after);
    per_conn(&before, &after, idle, avg);
    print_per_conn("per connection (average):", avg);
    if (split) {
        per_conn(&mid, &after, idle - idle_mid, marg);
        print_per_conn("per connection (marginal):", marg);
    }
    fflush(stdout);
    return idle;
}

static void usage(FILE *f) {
    fprintf(f, "usage: ugate-idle --pid PID [--pid PID ...] --port PORT [options]\n"
               "  --pid PID        server process to measure (repeat to sum several processes)\n"
               "  --port PORT      server port\n"
               "  --host ADDR      server IPv4 address (default 127.0.0.1)\n"
               "  --conns N        idle connections to open (default 10000)\n"
               "  --hold-ms MS     keep the last round's connections open this long (default 0)\n"
               "  --settle-ms MS   wait before reading memory / between rounds (default 1000)\n"
               "  --timeout-ms MS  give up on a round after this long (default 30000)\n"
               "  --window N       connections being set up at once (default 256)\n"
               "  --sources K      spread over source addresses 127.0.0.1..K (default: auto)\n"
               "  --path PATH      request path (default /)\n"
               "  --rewarm         also run round 2 after N opened and closed (default;\n"
               "                   alias --warm)\n"
               "  --no-rewarm      only round 1 (alias --no-warm)\n"
               "Round 1 prints the average growth per connection and the marginal growth\n"
               "over its second half (fixed pools excluded); round 2 the growth when N\n"
               "connections are opened again. The last line (RESULT ...) is for scripts.\n");
}

int main(int argc, char **argv) {
    static const struct option lo[] = {{"pid", required_argument, 0, 'p'},
                                       {"port", required_argument, 0, 'P'},
                                       {"host", required_argument, 0, 'H'},
                                       {"conns", required_argument, 0, 'n'},
                                       {"hold-ms", required_argument, 0, 'h'},
                                       {"settle-ms", required_argument, 0, 's'},
                                       {"timeout-ms", required_argument, 0, 't'},
                                       {"window", required_argument, 0, 'w'},
                                       {"sources", required_argument, 0, 'S'},
                                       {"path", required_argument, 0, 'u'},
                                       {"warm", no_argument, 0, 'W'},
                                       {"rewarm", no_argument, 0, 'W'},
                                       {"no-rewarm", no_argument, 0, 'N'},
                                       {"no-warm", no_argument, 0, 'N'},
                                       {"help", no_argument, 0, 'x'},
                                       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (o.npids == MAX_PIDS) die("at most %d --pid", MAX_PIDS);
            o.pids[o.npids++] = atoi(optarg);
            break;
        case 'P':
            o.port = atoi(optarg);
            break;
        case 'H':
            o.host = optarg;
            break;
        case 'n':
            o.conns = atoi(optarg);
            break;
        case 'h':
            o.hold_ms = atoi(optarg);
            break;
        case 's':
            o.settle_ms = atoi(optarg);
            break;
        case 't':
            o.timeout_ms = atoi(optarg);
            break;
        case 'w':
            o.window = atoi(optarg);
            break;
        case 'S':
            o.sources = atoi(optarg);
            break;
        case 'u':
            o.path = optarg;
            break;
        case 'W':
            o.rewarm = 1;
            break;
        case 'N':
            o.rewarm = 0;
            break;
        case 'x':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc || !o.npids || o.port <= 0 || o.port > 65535 || o.conns <= 0 ||
        o.window <= 0 || o.settle_ms < 0 || o.hold_ms < 0 || o.timeout_ms <= 0) {
        usage(stderr);
        return 1;
    }
    for (int i = 0; i < o.npids; i++)
        if (proc_kb(o.pids[i], "status", "VmRSS") < 0)
            die("no process %d (cannot read /proc/%d/status)", o.pids[i], o.pids[i]);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
    if (inet_pton(AF_INET, o.host, &dst.sin_addr) != 1) die("bad --host %s", o.host);
    if (o.sources <= 0) o.sources = o.conns > 20000 ? (o.conns + 19999) / 20000 : 1;
    if (o.sources > 254) die("--sources at most 254");

    int n =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", o.path, o.host, o.port);
    if (n <= 0 || (size_t)n >= sizeof req) die("--path too long");
    req_len = (size_t)n;

    raise_nofile((rlim_t)o.conns + 32);

    struct conn *cs = calloc((size_t)o.conns, sizeof *cs);
    if (!cs) die("out of memory");
    for (int i = 0; i < o.conns; i++) cs[i].fd = -1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1: %s", strerror(errno));

    printf("ugate-idle: %d connections to %s:%d, pid", o.conns, o.host, o.port);
    for (int i = 0; i < o.npids; i++) printf(" %d", o.pids[i]);
    printf(", %d source address%s\n", o.sources, o.sources > 1 ? "es" : "");
    fflush(stdout);

    double first[3], marg[3], rewarm[3] = {NAN, NAN, NAN}, unused[3];
    int idle1 = measure_round(ep, cs, &dst, "1 (first)", 1, first, marg), idle2 = -1;
    if (o.rewarm && idle1 == 0) {
        printf("round 2 skipped: no connection reached in round 1\n");
    } else if (o.rewarm) {
        close_all(ep, cs);
        sleep_ms(o.settle_ms); /* let the server see the closes and free what it frees */
        if (!pids_alive()) die("server process gone after round 1");
        idle2 =
            measure_round(ep, cs, &dst, "2 (rewarm: after N opened and closed)", 0, rewarm, unused);
    }
    if (o.hold_ms > 0) {
        int lost = watch_idle(ep, cs, o.hold_ms);
        printf("held %d ms; server closed %d idle connections meanwhile\n", o.hold_ms, lost);
    }
    close_all(ep, cs);
    close(ep);
    free(cs);

    int least = idle2 >= 0 && idle2 < idle1 ? idle2 : idle1;
    if (least < o.conns)
        fprintf(stderr,
                "ugate-idle: only %d of %d connections became idle keep-alive connections "
                "(server connection limit? its fd limit? idle timeout? see the counts above)\n",
                least, o.conns);
    char v[10][32];
    printf("RESULT conns=%d idle1=%d first_rss=%s first_dirty=%s first_anon=%s marg_rss=%s "
           "marg_dirty=%s marg_anon=%s",
           o.conns, idle1, fmt(v[0], 32, "%.1f", first[0], "-"),
           fmt(v[1], 32, "%.1f", first[1], "-"), fmt(v[2], 32, "%.1f", first[2], "-"),
           fmt(v[3], 32, "%.1f", marg[0], "-"), fmt(v[4], 32, "%.1f", marg[1], "-"),
           fmt(v[5], 32, "%.1f", marg[2], "-"));
    printf(" idle2=%s rewarm_rss=%s rewarm_dirty=%s rewarm_anon=%s\n",
           idle2 >= 0 ? (snprintf(v[6], 32, "%d", idle2), v[6]) : "-",
           fmt(v[7], 32, "%.1f", rewarm[0], "-"), fmt(v[8], 32, "%.1f", rewarm[1], "-"),
           fmt(v[9], 32, "%.1f", rewarm[2], "-"));
    return least < o.conns ? 2 : 0;
}
