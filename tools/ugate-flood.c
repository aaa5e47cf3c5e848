/*
 * ugate-flood: what clients that pipeline requests and never read cost a running HTTP server,
 * and whether a normal client is still answered meanwhile.
 *
 *   ugate-flood --port P --pid PID [--pid PID ...] [--clients 8] [--seconds 8]
 *               [--host 127.0.0.1] [--interval-ms 100] [--timeout-ms 2000]
 *
 * Opens --clients connections ("flooders") to HOST:PORT. Each sends
 * "GET / HTTP/1.1\r\nHost: x\r\n\r\n" over and over, as fast as its socket takes it
 * (non-blocking sends from a batch of whole requests, 64 KiB by default), and never reads a
 * byte of the responses. Meanwhile, every --interval-ms, a normal client connects, sends one
 * GET /, reads the whole response and closes; its latency (from connect to the last byte of
 * the response) is recorded, and one not answered with a 200 within --timeout-ms counts as a
 * failure. Every 100 ms the server's memory is read: VmRSS from /proc/PID/status, summed over
 * the --pid options (e.g. an nginx master and its worker).
 *
 * Normal clients start during the first --seconds; the flood goes on until the last of them
 * is answered or has failed (at most --timeout-ms more), then every connection is closed.
 * Growth is the highest reading minus the one taken before the flooders connected. Counted:
 * pages the server process touched (user space); not counted: kernel socket buffers. A
 * flooder the server closes is not reopened (reported as closed by the server). Safety: once
 * the growth passes --max-growth-mib (default 4096) the flood stops early ("capped").
 * Loopback only: --host must be in 127.0.0.0/8.
 *
 * Prints a line per second, a summary, and last a machine-readable line:
 *   RESULT rss_before_kib= rss_max_kib= growth_kib= sent_bytes= normal_ok= normal_total=
 *          normal_max_ms= normal_p50_ms= rss_end_kib= normal_slow= flood_connected=
 *          flood_closed= flood_refused= server_gone= capped= seconds=
 * normal_max_ms and normal_p50_ms are over the answered normal clients ("-" when none was);
 * normal_slow counts those answered after more than 1 s; flood_closed the flooders the server
 * closed after they connected, flood_refused those that could not connect.
 * Exit status: 0 measured (whatever the server did); 1 usage or system error, or no flooder
 * could send anything (nothing listening?).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PIDS 16
#define MAX_CLIENTS 1024
#define MAX_PROBES 100000
#define RESP_MAX 4096      /* bytes of one normal response we are willing to buffer */
#define SAMPLE_MS 100      /* memory sampling period */
#define SENDS_PER_EVENT 16 /* sends of one flooder per wake-up, so normal clients get a turn */
#define PROBE_TAG 0x80000000u

static const char REQ[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
#define REQ_LEN (sizeof REQ - 1)

struct opts {
    int pids[MAX_PIDS];
    int npids;
    const char *host;
    int port;
    int clients;
    int seconds;
    int interval_ms;
    int timeout_ms;
    int batch_bytes;
    long long max_growth_kib;
};

static struct opts o = {
    .host = "127.0.0.1",
    .clients = 8,
    .seconds = 8,
    .interval_ms = 100,
    .timeout_ms = 2000,
    .batch_bytes = 64 * 1024,
    .max_growth_kib = 4096LL * 1024,
};

enum fstate { F_CONNECTING, F_SENDING, F_CLOSED };

struct flooder {
    int fd;
    enum fstate st;
    size_t off;              /* next byte of the batch to send */
    unsigned long long sent; /* bytes the kernel took */
    int err;                 /* why it ended (errno, or ECONNRESET-like for a FIN) */
    int refused;             /* the connect failed */
};

enum pstate { P_CONNECTING, P_READING, P_OK, P_FAILED };

struct probe {
    int fd;
    enum pstate st;
    long long t0_us;
    long long lat_us;
    unsigned got;
    char *buf;
    const char *why; /* failure */
};

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ugate-flood: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* VmRSS in KiB of one process, or -1. */
static long long vmrss_kib(int pid) {
    char path[64], line[256];
    long long v = -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6)) {
            v = strtoll(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Summed VmRSS in KiB of the --pid processes, or -1 when one of them is gone. */
static long long read_rss(void) {
    long long sum = 0;
    for (int i = 0; i < o.npids; i++) {
        long long v = vmrss_kib(o.pids[i]);
        if (v < 0) return -1;
        sum += v;
    }
    return sum;
}

/* 1 when buf[0..len) holds a whole response, 0 if more is needed, -1 if it cannot be one we
 * understand. *status is set to the status code. */
static int response_complete(const char *buf, unsigned len, int *status) {
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return len >= RESP_MAX ? -1 : 0;
    size_t hlen = (size_t)(end - buf) + 4;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7)) return -1;
    *status = atoi(buf + 9);
    long long clen = -1;
    int chunked = 0;
    for (const char *p = memchr(buf, '\n', hlen); p && p < end; p = memchr(p, '\n', end - p)) {
        p++;
        if (!strncasecmp(p, "content-length:", 15))
            clen = strtoll(p + 15, NULL, 10);
        else if (!strncasecmp(p, "transfer-encoding:", 18)) {
            const char *q = p + 18, *eol = memchr(q, '\r', end + 2 - q);
            if (eol && memmem(q, eol - q, "chunked", 7)) chunked = 1;
        }
    }
    if (*status == 204 || *status == 304 || (*status >= 100 && *status < 200)) clen = 0;
    if (chunked) /* good enough for small bodies: ends with the last-chunk and no trailers */
        return len >= hlen + 5 && !memcmp(buf + len - 5, "0\r\n\r\n", 5) ? 1 : 0;
    if (clen < 0) return -1;
    if ((long long)len > (long long)hlen + clen) return -1; /* bytes after the response */
    return (long long)len == (long long)hlen + clen;
}

static int open_socket(const struct sockaddr_in *dst) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static void ep_add(int ep, int fd, uint32_t events, uint32_t tag) {
    struct epoll_event ev = {.events = events, .data.u32 = tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) die("epoll_ctl: %s", strerror(errno));
}

static void ep_mod(int ep, int fd, uint32_t events, uint32_t tag) {
    struct epoll_event ev = {.events = events, .data.u32 = tag};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev)) die("epoll_ctl: %s", strerror(errno));
}

static void flooder_close(int ep, struct flooder *f, int err) {
    if (f->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, f->fd, NULL);
        close(f->fd);
    }
    f->fd = -1;
    f->st = F_CLOSED;
    f->err = err;
}

/* Writable flooder: send from the batch until the socket is full (bounded per wake-up). */
static void flooder_send(int ep, struct flooder *f, uint32_t idx, const char *batch, size_t blen) {
    if (f->st == F_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            f->refused = 1;
            flooder_close(ep, f, err);
            return;
        }
        f->st = F_SENDING;
        /* EPOLLRDHUP: the server closing (or shutting its side) is seen even though we never
         * read; EPOLLIN is not asked for, so unread responses do not wake us */
        ep_mod(ep, f->fd, EPOLLOUT | EPOLLRDHUP, idx);
    }
    for (int i = 0; i < SENDS_PER_EVENT; i++) {
        size_t want = blen - f->off;
        ssize_t w = send(f->fd, batch + f->off, want, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            flooder_close(ep, f, errno);
            return;
        }
        f->sent += (unsigned long long)w;
        f->off = (f->off + (size_t)w) % blen;
        if ((size_t)w < want) return; /* the socket is full */
    }
}

static void probe_end(int ep, struct probe *p, int ok, const char *why, long long t) {
    if (p->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
        close(p->fd);
    }
    p->fd = -1;
    free(p->buf);
    p->buf = NULL;
    p->st = ok ? P_OK : P_FAILED;
    p->lat_us = t - p->t0_us;
    p->why = why;
}

static void probe_event(int ep, struct probe *p, uint32_t tag, uint32_t e, long long t) {
    if (p->st == P_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            probe_end(ep, p, 0, "connect failed", t);
            return;
        }
        if (!(e & EPOLLOUT)) return;
        /* a fresh socket takes 27 bytes at once */
        ssize_t w = send(p->fd, REQ, REQ_LEN, MSG_NOSIGNAL);
        if (w != (ssize_t)REQ_LEN) {
            probe_end(ep, p, 0, "send failed", t);
            return;
        }
        p->st = P_READING;
        p->buf = malloc(RESP_MAX);
        if (!p->buf) die("out of memory");
        ep_mod(ep, p->fd, EPOLLIN | EPOLLRDHUP, tag);
        return;
    }
    if (p->st != P_READING) return;
    ssize_t r = recv(p->fd, p->buf + p->got, RESP_MAX - p->got, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) {
        probe_end(ep, p, 0, r == 0 ? "closed before a whole response" : "reset", t);
        return;
    }
    p->got += (unsigned)r;
    int status = 0, k = response_complete(p->buf, p->got, &status);
    if (k == 0) return;
    if (k < 0)
        probe_end(ep, p, 0, "unreadable response", t);
    else
        probe_end(ep, p, status == 200, status == 200 ? NULL : "status not 200", t);
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *f) {
    fprintf(f, "usage: ugate-flood --port PORT --pid PID [--pid PID ...] [options]\n"
               "  --pid PID            server process to measure (repeat to sum several)\n"
               "  --port PORT          server port\n"
               "  --host ADDR          server IPv4 address in 127.0.0.0/8 (default 127.0.0.1)\n"
               "  --clients N          clients that pipeline GET / and never read (default 8)\n"
               "  --seconds S          flood length; normal clients start during it (default 8)\n"
               "  --interval-ms MS     a normal client every MS (default 100)\n"
               "  --timeout-ms MS      a normal client not answered by then fails (default 2000)\n"
               "  --batch-bytes N      bytes of whole requests per send (default 65536)\n"
               "  --max-growth-mib N   stop the flood early past this growth (default 4096)\n"
               "The last line (RESULT ...) is for scripts.\n");
}

static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    static const struct option lo[] = {{"pid", required_argument, 0, 'p'},
                                       {"port", required_argument, 0, 'P'},
                                       {"host", required_argument, 0, 'H'},
                                       {"clients", required_argument, 0, 'c'},
                                       {"seconds", required_argument, 0, 's'},
                                       {"interval-ms", required_argument, 0, 'i'},
                                       {"timeout-ms", required_argument, 0, 't'},
                                       {"batch-bytes", required_argument, 0, 'b'},
                                       {"max-growth-mib", required_argument, 0, 'm'},
                                       {"help", no_argument, 0, 'x'},
                                       {0, 0, 0, 0}};
    int c;
    long long v = 0;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'p':
            if (o.npids == MAX_PIDS) die("at most %d --pid", MAX_PIDS);
            bad = parse_int(optarg, 1, 1 << 30, &v);
            o.pids[o.npids++] = (int)v;
            break;
        case 'P':
            bad = parse_int(optarg, 1, 65535, &v);
            o.port = (int)v;
            break;
        case 'H':
            o.host = optarg;
            break;
        case 'c':
            bad = parse_int(optarg, 1, MAX_CLIENTS, &v);
            o.clients = (int)v;
            break;
        case 's':
            bad = parse_int(optarg, 1, 3600, &v);
            o.seconds = (int)v;
            break;
        case 'i':
            bad = parse_int(optarg, 10, 60000, &v);
            o.interval_ms = (int)v;
            break;
        case 't':
            bad = parse_int(optarg, 1, 60000, &v);
            o.timeout_ms = (int)v;
            break;
        case 'b':
            bad = parse_int(optarg, (long long)REQ_LEN, 64LL << 20, &v);
            o.batch_bytes = (int)v;
            break;
        case 'm':
            bad = parse_int(optarg, 1, 1LL << 30, &v);
            o.max_growth_kib = v * 1024;
            break;
        case 'x':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
        if (bad) {
            const char *name = "?";
            for (int i = 0; lo[i].name; i++)
                if (lo[i].val == c) name = lo[i].name;
            fprintf(stderr, "ugate-flood: bad value for --%s: %s\n", name, optarg);
            return 1;
        }
    }
    if (optind < argc || !o.npids || !o.port) {
        usage(stderr);
        return 1;
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
    if (inet_pton(AF_INET, o.host, &dst.sin_addr) != 1) die("bad --host %s", o.host);
    if ((ntohl(dst.sin_addr.s_addr) >> 24) != 127) die("--host must be a loopback address");
    long long probes_max = (long long)o.seconds * 1000 / o.interval_ms;
    if (probes_max < 1) probes_max = 1;
    if (probes_max > MAX_PROBES)
        die("--seconds / --interval-ms: more than %d normal clients", MAX_PROBES);
    long long rss_before = read_rss();
    if (rss_before < 0) die("cannot read VmRSS of every --pid (server gone?)");

    /* the batch: whole requests, so that sending it round and round keeps them whole */
    size_t nreq = (size_t)o.batch_bytes / REQ_LEN, blen = nreq * REQ_LEN;
    char *batch = malloc(blen);
    struct flooder *fl = calloc((size_t)o.clients, sizeof *fl);
    struct probe *pr = calloc((size_t)probes_max, sizeof *pr);
    long long *lat = malloc((size_t)probes_max * sizeof *lat);
    if (!batch || !fl || !pr || !lat) die("out of memory");
    for (size_t i = 0; i < nreq; i++) memcpy(batch + i * REQ_LEN, REQ, REQ_LEN);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1: %s", strerror(errno));

    printf("ugate-flood: %d clients pipelining GET / without reading, to %s:%d, for %d s; a normal "
           "client every %d ms (timeout %d ms); pid",
           o.clients, o.host, o.port, o.seconds, o.interval_ms, o.timeout_ms);
    for (int i = 0; i < o.npids; i++) printf(" %d", o.pids[i]);
    printf(", VmRSS before %.1f MiB\n", rss_before / 1024.0);
    fflush(stdout);

    long long t0 = now_us();
    for (int i = 0; i < o.clients; i++) {
        int fd = open_socket(&dst);
        if (fd < 0) die("flood client %d: connect: %s", i, strerror(-fd));
        fl[i].fd = fd;
        fl[i].st = F_CONNECTING;
        ep_add(ep, fd, EPOLLOUT | EPOLLRDHUP, (uint32_t)i);
    }

    long long flood_end = t0 + (long long)o.seconds * 1000000, next_probe = t0,
              next_sample = t0 + SAMPLE_MS * 1000, next_line = t0 + 1000000;
    long long rss_max = rss_before, rss_last = rss_before;
    int nprobes = 0, inflight = 0, server_gone = 0, capped = 0, ok_line = 0, done_line = 0;
    long long max_line_us = 0;
    struct epoll_event evs[256];
    for (;;) {
        long long t = now_us();
        if (t >= next_sample) {
            long long r = read_rss();
            if (r < 0) {
                server_gone = 1;
                printf("  the server is gone (a --pid has no /proc entry)\n");
                break;
            }
            rss_last = r;
            if (r > rss_max) rss_max = r;
            next_sample += SAMPLE_MS * 1000;
            if (next_sample <= t) next_sample = t + SAMPLE_MS * 1000;
            if (rss_max - rss_before > o.max_growth_kib) {
                capped = 1;
                printf("  growth past --max-growth-mib %lld: stopping the flood early\n",
                       o.max_growth_kib / 1024);
                break;
            }
        }
        if (t >= next_line) {
            unsigned long long sent = 0;
            int open = 0;
            for (int i = 0; i < o.clients; i++) sent += fl[i].sent, open += fl[i].st != F_CLOSED;
            printf("  t=%5.1f s  VmRSS %+9.1f MiB  clients pushed %9.1f MiB (%d open)  normal "
                   "%d/%d ok, max %.1f ms\n",
                   (t - t0) / 1e6, (rss_last - rss_before) / 1024.0, sent / 1048576.0, open,
                   ok_line, done_line, max_line_us / 1000.0);
            fflush(stdout);
            ok_line = done_line = 0;
            max_line_us = 0;
            next_line += 1000000;
        }
        if (nprobes < probes_max && t >= next_probe && t < flood_end) {
            struct probe *p = &pr[nprobes];
            p->t0_us = t;
            p->fd = -1;
            int fd = open_socket(&dst);
            if (fd < 0) {
                probe_end(ep, p, 0, "connect failed", t);
                done_line++;
            } else {
                p->fd = fd;
                p->st = P_CONNECTING;
                ep_add(ep, fd, EPOLLOUT | EPOLLRDHUP, PROBE_TAG | (uint32_t)nprobes);
                inflight++;
            }
            nprobes++;
            next_probe += (long long)o.interval_ms * 1000;
        }
        for (int i = 0; i < nprobes; i++) {
            struct probe *p = &pr[i];
            if ((p->st == P_CONNECTING || p->st == P_READING) &&
                t - p->t0_us >= (long long)o.timeout_ms * 1000) {
                probe_end(ep, p, 0, "timed out", t);
                inflight--;
                done_line++;
            }
        }
        if (t >= flood_end && inflight == 0) break;

        long long wake = next_sample < next_line ? next_sample : next_line;
        if (nprobes < probes_max && next_probe < wake) wake = next_probe;
        if (t < flood_end && flood_end < wake) wake = flood_end;
        for (int i = 0; i < nprobes; i++)
            if (pr[i].st == P_CONNECTING || pr[i].st == P_READING) {
                long long dl = pr[i].t0_us + (long long)o.timeout_ms * 1000;
                if (dl < wake) wake = dl;
            }
        long long wait_ms = (wake - t + 999) / 1000;
        if (wait_ms < 0) wait_ms = 0;
        if (wait_ms > 100) wait_ms = 100;
        int n = epoll_wait(ep, evs, 256, (int)wait_ms);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        t = now_us();
        for (int i = 0; i < n; i++) {
            uint32_t tag = evs[i].data.u32, e = evs[i].events;
            if (tag & PROBE_TAG) {
                struct probe *p = &pr[tag & ~PROBE_TAG];
                if (p->st != P_CONNECTING && p->st != P_READING) continue;
                probe_event(ep, p, tag, e, t);
                if (p->st == P_OK || p->st == P_FAILED) {
                    inflight--;
                    done_line++;
                    ok_line += p->st == P_OK;
                    if (p->st == P_OK && p->lat_us > max_line_us) max_line_us = p->lat_us;
                }
                continue;
            }
            struct flooder *f = &fl[tag];
            if (f->st == F_CLOSED) continue;
            if (f->st == F_SENDING && (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
                flooder_close(ep, f, (e & EPOLLERR) ? ECONNRESET : EPIPE);
                continue;
            }
            if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) flooder_send(ep, f, tag, batch, blen);
        }
    }
    long long t_end = now_us();
    long long rss_end = read_rss();

    unsigned long long sent = 0;
    int connected = 0, closed_by_server = 0, refused = 0;
    for (int i = 0; i < o.clients; i++) {
        sent += fl[i].sent;
        connected += fl[i].sent > 0;
        refused += fl[i].refused;
        if (fl[i].st == F_CLOSED)
            closed_by_server += !fl[i].refused;
        else
            flooder_close(ep, &fl[i], 0);
    }
    /* normal clients still in flight (the run ended early) are left out of the counts */
    int ok = 0, total = 0, slow = 0, nlat = 0;
    int f_timeout = 0, f_other = 0;
    const char *first_why = NULL;
    for (int i = 0; i < nprobes; i++) {
        struct probe *p = &pr[i];
        if (p->st == P_CONNECTING || p->st == P_READING) {
            probe_end(ep, p, 0, NULL, t_end);
            continue;
        }
        total++;
        if (p->st == P_OK) {
            ok++;
            lat[nlat++] = p->lat_us;
            slow += p->lat_us > 1000000;
        } else {
            if (!first_why) first_why = p->why;
            if (p->why && !strcmp(p->why, "timed out"))
                f_timeout++;
            else
                f_other++;
        }
    }
    qsort(lat, (size_t)nlat, sizeof *lat, cmp_ll);
    char maxs[32] = "-", p50s[32] = "-";
    if (nlat) {
        snprintf(maxs, sizeof maxs, "%.1f", lat[nlat - 1] / 1000.0);
        snprintf(p50s, sizeof p50s, "%.1f", lat[(nlat - 1) / 2] / 1000.0);
    }
    char ends[32] = "-";
    if (rss_end >= 0) snprintf(ends, sizeof ends, "%lld", rss_end);

    printf("summary after %.1f s:\n", (t_end - t0) / 1e6);
    printf("  server VmRSS: before %.1f MiB, highest %.1f MiB, growth %.1f MiB%s\n",
           rss_before / 1024.0, rss_max / 1024.0, (rss_max - rss_before) / 1024.0,
           capped ? " (capped: the flood was stopped early)" : "");
    printf("  flood: %d/%d clients sent, %.1f MiB pushed (%.0f requests); %d closed by the "
           "server, %d could not connect\n",
           connected, o.clients, sent / 1048576.0, (double)sent / REQ_LEN, closed_by_server,
           refused);
    printf("  normal clients: %d/%d answered with 200 (failed: %d timed out, %d other%s%s); "
           "latency p50 %s ms, max %s ms, %d over 1 s\n",
           ok, total, f_timeout, f_other, first_why ? ", first: " : "", first_why ? first_why : "",
           p50s, maxs, slow);
    if (server_gone) printf("  the server process went away during the run\n");
    printf("RESULT rss_before_kib=%lld rss_max_kib=%lld growth_kib=%lld sent_bytes=%llu "
           "normal_ok=%d normal_total=%d normal_max_ms=%s normal_p50_ms=%s rss_end_kib=%s "
           "normal_slow=%d flood_connected=%d flood_closed=%d flood_refused=%d server_gone=%d "
           "capped=%d seconds=%.1f\n",
           rss_before, rss_max, rss_max - rss_before, sent, ok, total, maxs, p50s, ends, slow,
           connected, closed_by_server, refused, server_gone, capped, (t_end - t0) / 1e6);
    close(ep);
    free(batch);
    free(fl);
    free(pr);
    free(lat);
    if (connected == 0) {
        fprintf(stderr,
                "ugate-flood: no flood client could send anything (nothing listening on "
                "%s:%d?)\n",
                o.host, o.port);
        return 1;
    }
    return 0;
}
