/*
 * ugate-probe: graceful-shutdown proof. Starts a server, drives mixed HTTP/1.1 load against it
 * on 127.0.0.1, sends it a shutdown signal mid-load, keeps the load going until the server
 * exits, and classifies every request attempt.
 *
 *   ugate-probe [options] -- SERVER-COMMAND [ARGS...]
 *
 * One run:
 *   1. check that nothing answers on 127.0.0.1:PORT yet (else we would test the wrong server);
 *   2. fork/exec the server in its own process group, stdout/stderr to --server-log;
 *   3. wait until it answers GET / (bounded by --max-ms);
 *   4. start the load threads: keep-alive loops (one connection each, GET / back to back with
 *      short random think times, so that some requests race the server closing the connection
 *      as idle), connection-per-request loops (connect, GET /, read, close) and slow loops
 *      (GET /sleep?ms=N, so that slow requests are in flight at the signal);
 *   5. after --warmup-ms send the signal to the server process (not its group: a server that
 *      forks, like nginx, forwards it itself);
 *   6. keep the load going until the server process exits; if it has not exited --max-ms after
 *      the signal, SIGKILL its process group and count every request still open as hung;
 *   7. stop the load, SIGKILL whatever is left of the server's process group, reap the server,
 *      print one line of counts.
 *
 * Everything is bounded: every request attempt by --req-timeout-ms (poll deadlines, never a
 * blocking call without one), every loop by a count and by the run's time bound.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS INT64_C(1000000)
#define MAX_THREADS 1024
#define MAX_ATTEMPTS_PER_THREAD 50000000u
#define EVENTS_PER_THREAD 4
#define EVENTS_PRINTED 24

static const char usage_text[] =
    "usage: ugate-probe [options] -- SERVER-COMMAND [ARGS...]\n"
    "\n"
    "Starts SERVER-COMMAND (in its own process group), waits until it answers GET / on\n"
    "127.0.0.1:PORT, drives mixed load against it, sends it a shutdown signal mid-load, keeps\n"
    "the load going until it exits, and classifies every request attempt. Only 127.0.0.1 is\n"
    "ever contacted.\n"
    "\n"
    "options:\n"
    "  --port N            port the server listens on (required)\n"
    "  --signal SIG        TERM | INT | QUIT | USR2 (default TERM), sent to the server process\n"
    "  --successor-ms N    the signal starts a successor that takes the port over (an in-place\n"
    "                      upgrade, e.g. USR2): after the server exits, the load goes on N ms\n"
    "                      against the successor (then its process group is killed), and any\n"
    "                      attempt not completed, but for connect_err and send_fail, is a\n"
    "                      failure: refused included, and so is a connect over 500 ms\n"
    "                      (slow_connect) (default 0: no successor)\n"
    "  --upgrades N        with --successor-ms: N signals in a row, each to the instance the\n"
    "                      last one started (found with --pid-file), every one expected to\n"
    "                      exit 0 (default 1)\n"
    "  --pid-file PATH     where the serving instance writes its pid (ugate-serve --pid-file)\n"
    "  --then-signal SIG   with --successor-ms: once the successor is ready, --then-ms later,\n"
    "                      send the old process SIG too (nginx's binary upgrade: --signal\n"
    "                      USR2 --then-signal QUIT)\n"
    "  --then-ms N         see --then-signal (default 0)\n"
    "  --follow-pid-file   the command daemonizes (nginx with daemon on): once it has exited,\n"
    "                      the server is the process --pid-file names (adopted by the probe,\n"
    "                      a subreaper)\n"
    "  --hold-socket       restarts instead of upgrades: the probe binds the port and holds\n"
    "                      the socket, hands it to each instance as systemd would (fd 3,\n"
    "                      LISTEN_FDS=1, LISTEN_PID) and starts the next one as soon as the\n"
    "                      last exits; connects meanwhile queue in the held socket\n"
    "                      only (not its group: nginx's master forwards it to its workers);\n"
    "                      after each run whatever is left of the group is SIGKILLed\n"
    "  --runs N            repeat N runs, restarting the server each time (default 1)\n"
    "  --ka N              keep-alive threads (default 8): one connection each, GET / again\n"
    "                      and again; even-numbered threads back to back, odd-numbered ones\n"
    "                      after a random think time of 0..--think-ms\n"
    "  --cpr N             connection-per-request threads (default 4): connect, GET /, close\n"
    "  --slow N            slow-request threads (default 4): GET /sleep?ms=M, M uniform in\n"
    "                      [2/3, 4/3] x --sleep-ms; odd-numbered slow threads reuse their\n"
    "                      connection, even-numbered ones open a new one per request\n"
    "  --sleep-ms N        /sleep duration (default 300)\n"
    "  --think-ms N        keep-alive think time bound (default 50)\n"
    "  --warmup-ms N       load before the signal (default 300)\n"
    "  --max-ms N          bound on server start-up, and on signal-to-exit: past it the server\n"
    "                      group is SIGKILLed and every request still open counts as hung\n"
    "                      (default 10000)\n"
    "  --req-timeout-ms N  per-request bound (connect + send + response) (default 6000)\n"
    "  --gate-grace-ms N   see after_gate (default 50)\n"
    "  --drain-delay-ms N  the server's lame-duck delay: its gate may stay open that long after\n"
    "                      the signal (default 0)\n"
    "  --server-log PATH   server stdout/stderr, appended (default /dev/null)\n"
    "  --quiet             only the count lines (no progress or failure details on stderr)\n"
    "  --help              this text\n"
    "\n"
    "Every request attempt lands in exactly one class:\n"
    "  completed       a full, valid response (status line, headers, and the body by\n"
    "                  Content-Length, chunked framing, or up to EOF when neither is given)\n"
    "  refused         connect() failed with ECONNREFUSED: the gate is closed, cleanly\n"
    "  connect_err     connect() failed otherwise, or did not finish within --req-timeout-ms\n"
    "  send_fail       the connection was up but send() failed (EPIPE, ECONNRESET...): the\n"
    "                  request never left, a client may retry it (RFC 9112 9.3.1); not a loss\n"
    "  lost_inflight   request fully written as the FIRST request of a new connection, then\n"
    "                  EOF or reset before any response byte\n"
    "  lost_keepalive  request fully written on a REUSED keep-alive connection, then EOF or\n"
    "                  reset before any response byte (the RFC 9112 9.6 close race). Before\n"
    "                  writing on a reused connection the client peeks (MSG_PEEK|MSG_DONTWAIT):\n"
    "                  a close it can already see is not an attempt, it just reconnects\n"
    "  truncated       some response bytes, then EOF or reset before the response was complete\n"
    "  malformed       bytes that are not a valid HTTP/1.x response (or extra bytes after one)\n"
    "  hung            no complete response and no close within --req-timeout-ms, or the\n"
    "                  request was still open when the server had to be SIGKILLed\n"
    "  after_gate      a complete response on a connection whose connect() STARTED more than\n"
    "                  G ms after the signal was sent, G = --drain-delay-ms + --gate-grace-ms:\n"
    "                  the server accepted and served a connection after it should have\n"
    "                  closed its gate (a closed gate refuses). Only a lame-duck drain delay\n"
    "                  legitimately keeps the gate open; --gate-grace-ms covers the time the\n"
    "                  server needs to notice the signal and close its listener\n"
    "Also counted: non2xx (complete responses, completed or after_gate, whose status is not\n"
    "2xx). Per run: exit (server exit code, or 128+signal), exit_ms (signal to server exit),\n"
    "refuse_ms (signal to the first ECONNREFUSED; -1 if none). Times in ms, 0.1 ms resolution.\n"
    "\n"
    "Output: one line per run on stdout, then a totals line (sums; exit_ms_max and\n"
    "refuse_ms_max over the runs; nonzero_exits, killed, died_early: runs). Unless --quiet,\n"
    "progress and the first failures of each thread (ms relative to the signal) go to stderr.\n"
    "Exit status: 0 if no attempt in any run was lost_inflight, lost_keepalive, truncated,\n"
    "malformed, hung or after_gate (and the server did not die before the signal); 1\n"
    "otherwise; 2 on usage or setup error.\n"
    "\n"
    "example:\n"
    "  ugate-probe --port 18083 --runs 5 -- ./anchor-go 127.0.0.1:18083\n"
    "  ugate-probe --port 18081 --signal QUIT -- nginx -c /path/nginx.conf\n";

/* ---- configuration and shared run state ---- */

static struct {
    int port;
    int sig;
    int runs;
    int ka, cpr, slow;
    int sleep_ms, think_ms, warmup_ms, max_ms, req_timeout_ms, gate_grace_ms, drain_delay_ms;
    int successor_ms; /* an upgrade: the load goes on this long against the successor */
    int upgrades;     /* in a row: each successor is signalled in turn (--pid-file finds it) */
    int hold_socket;  /* restarts: the probe holds the socket and starts each instance on it */
    const char *pid_file;
    int then_sig;   /* nginx's binary upgrade: a second signal to the old process... */
    int then_ms;    /* ...this long after its successor is ready (its pid file) */
    int follow_pid; /* the command daemonizes: the server is the pid its pid file names */
    bool quiet;
    const char *server_log;
    char **cmd;
} cfg = {
    .port = 0,
    .sig = SIGTERM,
    .runs = 1,
    .ka = 8,
    .cpr = 4,
    .slow = 4,
    .sleep_ms = 300,
    .think_ms = 50,
    .warmup_ms = 300,
    .max_ms = 10000,
    .req_timeout_ms = 6000,
    .gate_grace_ms = 50,
    .drain_delay_ms = 0,
    .upgrades = 1,
    .quiet = false,
    .server_log = "/dev/null",
    .cmd = NULL,
};

/* Written by the main thread, read by the load threads. 0 = not yet. */
static _Atomic int64_t g_sig_ns;  /* when the signal was sent */
static _Atomic int64_t g_kill_ns; /* when the server group was SIGKILLed at --max-ms */
static atomic_int g_stop;         /* the server has exited: load threads finish */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * INT64_C(1000000000) + ts.tv_nsec;
}

static void sleep_ns(int64_t ns) {
    if (ns <= 0) return;
    struct timespec ts = {.tv_sec = ns / INT64_C(1000000000), .tv_nsec = ns % INT64_C(1000000000)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* poll() timeout for a deadline, rounded up so that we never spin on a 0 ms timeout. */
static int poll_ms(int64_t deadline) {
    int64_t left = deadline - now_ns();
    if (left <= 0) return 0;
    int64_t ms = (left + NS_PER_MS - 1) / NS_PER_MS;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static double ms_since(int64_t t0, int64_t t) {
    return (double)(t - t0) / 1e6;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
    if (cfg.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

/* ---- response parser: incremental, byte-exact framing ---- */

enum pstate {
    P_STATUS,     /* status line */
    P_HEADERS,    /* header lines */
    P_BODY_CL,    /* Content-Length body */
    P_CHUNK_SIZE, /* chunk-size [; ext] CRLF */
    P_CHUNK_DATA, /* chunk data */
    P_CHUNK_CRLF, /* CRLF after chunk data */
    P_TRAILERS,   /* trailer lines after the last chunk */
    P_BODY_EOF,   /* body delimited by the close of the connection */
    P_DONE,
};

struct parser {
    enum pstate st;
    char line[4096];
    size_t llen;
    int cur_status; /* status of the response being parsed (may be 1xx) */
    int status;     /* final status */
    int vminor;
    bool close, keepalive_hdr, chunked, te, have_cl, crlf_cr;
    uint64_t cl, remain;
    uint64_t nbytes; /* response bytes received */
    unsigned nheaders;
};

static void parser_init(struct parser *p) {
    memset(p, 0, sizeof *p);
    p->st = P_STATUS;
}

static bool token_in_list(const char *v, const char *tok, bool last_only) {
    size_t tl = strlen(tok);
    bool found = false;
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',') v++;
        const char *s = v;
        while (*v && *v != ',') v++;
        const char *e = v;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if (e == s) continue;
        bool eq = (size_t)(e - s) == tl && strncasecmp(s, tok, tl) == 0;
        if (last_only)
            found = eq;
        else if (eq)
            return true;
    }
    return found;
}

static int parse_status_line(struct parser *p) {
    const char *l = p->line;
    if (p->llen < 12 || strncmp(l, "HTTP/1.", 7) != 0) return -1;
    if (l[7] < '0' || l[7] > '9' || l[8] != ' ') return -1;
    for (int i = 9; i < 12; i++)
        if (l[i] < '0' || l[i] > '9') return -1;
    if (p->llen > 12 && l[12] != ' ') return -1;
    p->vminor = l[7] - '0';
    p->cur_status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    if (p->cur_status < 100) return -1;
    p->keepalive_hdr = p->chunked = p->te = p->have_cl = false;
    p->close = false;
    p->nheaders = 0;
    return 0;
}

static int parse_header_line(struct parser *p) {
    char *l = p->line;
    if (++p->nheaders > 200) return -1;
    if (l[0] == ' ' || l[0] == '\t') return -1; /* obs-fold: not sent by sane servers */
    char *colon = strchr(l, ':');
    if (!colon || colon == l) return -1;
    for (char *c = l; c < colon; c++)
        if (*c == ' ' || *c == '\t') return -1;
    size_t nlen = (size_t)(colon - l);
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    char *ve = v + strlen(v);
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) *--ve = '\0';

    if (nlen == 14 && strncasecmp(l, "Content-Length", 14) == 0) {
        if (*v == '\0') return -1;
        uint64_t n = 0;
        for (const char *c = v; *c; c++) {
            if (*c < '0' || *c > '9') return -1;
            if (n > (UINT64_MAX - 9) / 10) return -1;
            n = n * 10 + (uint64_t)(*c - '0');
        }
        if (p->have_cl && p->cl != n) return -1;
        p->have_cl = true;
        p->cl = n;
    } else if (nlen == 17 && strncasecmp(l, "Transfer-Encoding", 17) == 0) {
        p->te = true;
        p->chunked = token_in_list(v, "chunked", true);
    } else if (nlen == 10 && strncasecmp(l, "Connection", 10) == 0) {
        if (token_in_list(v, "close", false)) p->close = true;
        if (token_in_list(v, "keep-alive", false)) p->keepalive_hdr = true;
    }
    return 0;
}

/* A complete line (without its CRLF) is in p->line. */
static int on_line(struct parser *p) {
    switch (p->st) {
    case P_STATUS:
        if (parse_status_line(p) < 0) return -1;
        p->st = P_HEADERS;
        return 0;
    case P_HEADERS:
        if (p->llen > 0) return parse_header_line(p);
        /* end of the header block */
        if (p->cur_status < 200) {
            if (p->cur_status == 101) return -1; /* we never ask to upgrade */
            p->st = P_STATUS;                    /* interim response: the real one follows */
            return 0;
        }
        p->status = p->cur_status;
        if (p->vminor == 0 && !p->keepalive_hdr) p->close = true;
        if (p->cur_status == 204 || p->cur_status == 304) {
            p->st = P_DONE;
        } else if (p->te) {
            /* RFC 9112 6.3: Transfer-Encoding overrides Content-Length; a response whose
             * final coding is not chunked is delimited by the close. */
            if (p->chunked) {
                p->st = P_CHUNK_SIZE;
            } else {
                p->st = P_BODY_EOF;
                p->close = true;
            }
        } else if (p->have_cl) {
            p->remain = p->cl;
            p->st = p->cl ? P_BODY_CL : P_DONE;
        } else {
            p->st = P_BODY_EOF;
            p->close = true;
        }
        return 0;
    case P_CHUNK_SIZE: {
        uint64_t n = 0;
        size_t i = 0;
        for (; i < p->llen; i++) {
            char c = p->line[i];
            int d;
            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (c >= 'a' && c <= 'f')
                d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                d = c - 'A' + 10;
            else
                break;
            if (n > (UINT64_MAX >> 4)) return -1;
            n = (n << 4) | (uint64_t)d;
        }
        if (i == 0) return -1;
        if (i < p->llen && p->line[i] != ';' && p->line[i] != ' ' && p->line[i] != '\t') return -1;
        if (n == 0) {
            p->st = P_TRAILERS;
        } else {
            p->remain = n;
            p->st = P_CHUNK_DATA;
        }
        return 0;
    }
    case P_TRAILERS:
        if (p->llen == 0) p->st = P_DONE;
        return 0;
    default:
        return -1;
    }
}

/*
 * Feed n bytes. Returns 1 when the response is complete (*used = bytes that belonged to it),
 * 0 when more bytes are needed (all consumed), -1 when the bytes are not a valid response.
 */
static int parser_feed(struct parser *p, const char *buf, size_t n, size_t *used) {
    size_t i = 0;
    while (i < n && p->st != P_DONE) {
        switch (p->st) {
        case P_STATUS:
        case P_HEADERS:
        case P_CHUNK_SIZE:
        case P_TRAILERS: {
            char c = buf[i++];
            p->nbytes++;
            if (c == '\n') {
                if (p->llen > 0 && p->line[p->llen - 1] == '\r') p->llen--;
                p->line[p->llen] = '\0';
                if (on_line(p) < 0) return -1;
                p->llen = 0;
            } else {
                if (p->llen + 2 >= sizeof p->line) return -1;
                p->line[p->llen++] = c;
            }
            break;
        }
        case P_BODY_CL:
        case P_CHUNK_DATA: {
            uint64_t take = n - i;
            if (take > p->remain) take = p->remain;
            i += (size_t)take;
            p->nbytes += take;
            p->remain -= take;
            if (p->remain == 0) {
                if (p->st == P_BODY_CL) {
                    p->st = P_DONE;
                } else {
                    p->st = P_CHUNK_CRLF;
                    p->crlf_cr = false;
                }
            }
            break;
        }
        case P_CHUNK_CRLF: {
            char c = buf[i++];
            p->nbytes++;
            if (c == '\r' && !p->crlf_cr) {
                p->crlf_cr = true;
            } else if (c == '\n') {
                p->st = P_CHUNK_SIZE;
            } else {
                return -1;
            }
            break;
        }
        case P_BODY_EOF:
            p->nbytes += n - i;
            i = n;
            break;
        case P_DONE:
            break;
        }
    }
    *used = i;
    return p->st == P_DONE ? 1 : 0;
}

/* ---- sockets ---- */

/* Nonblocking connect to 127.0.0.1:port, bounded by deadline. Returns fd, or -errno. */
static int connect_loopback(int64_t deadline) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* hard-coded: this tool only talks to 127.0.0.1 */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) return fd;
    int err = errno;
    if (err != EINPROGRESS && err != EINTR) {
        close(fd);
        return -err;
    }
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int ms = poll_ms(deadline);
        if (ms == 0) {
            close(fd);
            return -ETIMEDOUT;
        }
        int rc = poll(&pfd, 1, ms);
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) {
            err = errno;
            close(fd);
            return -err;
        }
        if (rc == 0) continue; /* deadline re-checked above */
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err) {
            close(fd);
            return -err;
        }
        return fd;
    }
}

/* Write all of buf, bounded by deadline. Returns 0, or -errno (nothing or part written). */
static int send_all(int fd, const char *buf, size_t len, int64_t deadline) {
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int ms = poll_ms(deadline);
        if (ms == 0) return -ETIMEDOUT;
        if (poll(&pfd, 1, ms) < 0 && errno != EINTR) return -errno;
    }
    return 0;
}

enum rx {
    RX_DONE,      /* complete response */
    RX_EOF,       /* EOF, nothing or part of a response */
    RX_RESET,     /* recv error (ECONNRESET...), err set */
    RX_TIMEOUT,   /* deadline */
    RX_MALFORMED, /* not HTTP, or bytes past the end of the response */
};

/* Read one response on fd into p, bounded by deadline. */
static enum rx read_response(int fd, struct parser *p, int64_t deadline, int *err) {
    char buf[16384];
    *err = 0;
    for (;;) {
        int ms = poll_ms(deadline);
        if (ms == 0) return RX_TIMEOUT;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, ms);
        if (rc < 0 && errno != EINTR) {
            *err = errno;
            return RX_RESET;
        }
        if (rc <= 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            size_t used = 0;
            int r = parser_feed(p, buf, (size_t)n, &used);
            if (r < 0) return RX_MALFORMED;
            if (r == 1) return used == (size_t)n ? RX_DONE : RX_MALFORMED;
            continue;
        }
        if (n == 0) {
            if (p->st == P_BODY_EOF) {
                p->st = P_DONE;
                return RX_DONE;
            }
            return RX_EOF;
        }
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        *err = errno;
        return RX_RESET;
    }
}

/* ---- load threads ---- */

enum cls {
    C_COMPLETED,
    C_REFUSED,
    C_CONNECT_ERR,
    C_SEND_FAIL,
    C_LOST_INFLIGHT,
    C_LOST_KEEPALIVE,
    C_TRUNCATED,
    C_MALFORMED,
    C_HUNG,
    C_AFTER_GATE,
    C_NCLASS
};

static const char *const cls_name[C_NCLASS] = {
    "completed",      "refused",   "connect_err", "send_fail", "lost_inflight",
    "lost_keepalive", "truncated", "malformed",   "hung",      "after_gate",
};

/* With a successor (--successor-ms) the port must never refuse, and a connection served
 * after the gate is the successor's, as it should be. */
static bool cls_is_failure(int c) {
    if (cfg.successor_ms)
        return c != C_COMPLETED && c != C_AFTER_GATE && c != C_SEND_FAIL && c != C_CONNECT_ERR;
    return c == C_LOST_INFLIGHT || c == C_LOST_KEEPALIVE || c == C_TRUNCATED || c == C_MALFORMED ||
           c == C_HUNG || c == C_AFTER_GATE;
}

struct counts {
    uint64_t n[C_NCLASS];
    uint64_t non2xx;
    uint64_t reconnects;       /* reused connection seen closed before sending: not an attempt */
    uint64_t open_at_signal;   /* requests written before the signal and still open at it */
    uint64_t answered_late;    /* complete responses to requests written after the signal */
    uint64_t slow_connects;    /* connects (refused or not) that took over SLOW_CONNECT_MS */
    uint64_t first_refuse_set; /* 1 if first_refuse_ns is valid */
    int64_t first_refuse_ns;
};

/* A connect this slow waited for a SYN retransmission (or a full backlog): a client sees it. */
#define SLOW_CONNECT_MS 500

enum kind { K_KA, K_CPR, K_SLOW };
static const char *const kind_name[] = {"ka", "cpr", "slow"};

struct event { /* details of a failed attempt, for the report on stderr */
    int cls, kind, err, status;
    unsigned nreq;
    uint64_t nbytes;
    int64_t t_connect, t_sent, t_end;
};

struct conn {
    int fd;
    int64_t t_connect; /* when connect() started */
    unsigned nreq;     /* requests already answered on it */
};

struct worker {
    pthread_t th;
    enum kind kind;
    int idx;
    bool reuse;
    uint64_t rng;
    int64_t hard_end;
    struct counts c;
    struct event ev[EVENTS_PER_THREAD];
    int nev;
};

static uint64_t rnd(struct worker *w) {
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * UINT64_C(2685821657736338717);
}

static void conn_close(struct conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->nreq = 0;
}

static void note(struct worker *w, int cls, const struct conn *c, int err, int64_t t_sent,
                 const struct parser *p) {
    w->c.n[cls]++;
    /* keep details of failures, and of the unusual non-failures (connect_err, send_fail) */
    if (cls == C_COMPLETED || cls == C_REFUSED || w->nev >= EVENTS_PER_THREAD) return;
    if (cfg.successor_ms && cls == C_AFTER_GATE) return; /* the successor's: as it should be */
    struct event *e = &w->ev[w->nev++];
    e->cls = cls;
    e->kind = w->kind;
    e->err = err;
    e->status = p ? p->status : 0;
    e->nreq = c->nreq;
    e->nbytes = p ? p->nbytes : 0;
    e->t_connect = c->t_connect;
    e->t_sent = t_sent;
    e->t_end = now_ns();
}

/*
 * One request attempt. Returns the class it landed in, or -1 if nothing was attempted (the
 * run is over).
 */
static int attempt(struct worker *w, struct conn *c, const char *req, size_t reqlen) {
    int64_t deadline = now_ns() + (int64_t)cfg.req_timeout_ms * NS_PER_MS;

    if (c->fd >= 0 && c->nreq > 0) {
        /* Reused connection: if the server has closed it (or sent something unasked, e.g. a
         * 408 before closing) and we can already see that, a client reconnects; nothing is
         * attempted on it. */
        char b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_close(c);
            w->c.reconnects++;
        }
    }
    if (c->fd < 0) {
        if (atomic_load(&g_stop)) return -1;
        c->t_connect = now_ns();
        int fd = connect_loopback(deadline);
        if (now_ns() - c->t_connect > (int64_t)SLOW_CONNECT_MS * NS_PER_MS) w->c.slow_connects++;
        if (fd < 0) {
            int cls = fd == -ECONNREFUSED ? C_REFUSED : C_CONNECT_ERR;
            if (cls == C_REFUSED) {
                int64_t t = now_ns();
                int64_t sig = atomic_load(&g_sig_ns);
                if (sig && t >= sig && !w->c.first_refuse_set) {
                    w->c.first_refuse_set = 1;
                    w->c.first_refuse_ns = t;
                }
            }
            note(w, cls, c, -fd, 0, NULL);
            return cls;
        }
        c->fd = fd;
        c->nreq = 0;
    }

    bool reused = c->nreq > 0;
    int err = send_all(c->fd, req, reqlen, deadline);
    if (err < 0) {
        note(w, C_SEND_FAIL, c, -err, 0, NULL);
        conn_close(c);
        return C_SEND_FAIL;
    }
    int64_t t_sent = now_ns();

    struct parser p;
    parser_init(&p);
    enum rx rx = read_response(c->fd, &p, deadline, &err);
    int64_t t_end = now_ns();
    int64_t sig = atomic_load(&g_sig_ns);
    int64_t kill_ns = atomic_load(&g_kill_ns);
    if (sig && t_sent < sig && t_end >= sig) w->c.open_at_signal++;

    int cls;
    switch (rx) {
    case RX_DONE: {
        int64_t gate = sig + (int64_t)(cfg.drain_delay_ms + cfg.gate_grace_ms) * NS_PER_MS;
        cls = sig && c->t_connect > gate ? C_AFTER_GATE : C_COMPLETED;
        if (p.status < 200 || p.status > 299) w->c.non2xx++;
        if (sig && t_sent >= sig) w->c.answered_late++;
        break;
    }
    case RX_EOF:
    case RX_RESET:
        if (p.nbytes == 0)
            cls = reused ? C_LOST_KEEPALIVE : C_LOST_INFLIGHT;
        else
            cls = C_TRUNCATED;
        break;
    case RX_TIMEOUT:
        cls = C_HUNG;
        break;
    case RX_MALFORMED:
    default:
        cls = C_MALFORMED;
        break;
    }
    /* The server was SIGKILLed at --max-ms with this request open: it hung (the main thread
     * stores g_kill_ns before it sends SIGKILL, so a failure the kill caused ends after it). */
    if ((cls == C_LOST_INFLIGHT || cls == C_LOST_KEEPALIVE || cls == C_TRUNCATED) && kill_ns &&
        t_sent < kill_ns && t_end >= kill_ns)
        cls = C_HUNG;
    note(w, cls, c, err, t_sent, &p);
    if (rx == RX_DONE && !p.close)
        c->nreq++;
    else
        conn_close(c);
    return cls;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct conn c = {.fd = -1};
    char req[256];
    int reqlen = snprintf(req, sizeof req,
                          "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: ugate-probe\r\n\r\n",
                          cfg.port);

    for (unsigned i = 0; i < MAX_ATTEMPTS_PER_THREAD; i++) {
        if (atomic_load(&g_stop) || now_ns() > w->hard_end) break;
        if (w->kind == K_SLOW) {
            int lo = cfg.sleep_ms * 2 / 3, span = cfg.sleep_ms * 2 / 3 + 1;
            int ms = lo + (int)(rnd(w) % (uint64_t)span);
            reqlen = snprintf(req, sizeof req,
                              "GET /sleep?ms=%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                              "User-Agent: ugate-probe\r\n\r\n",
                              ms, cfg.port);
        }
        int cls = attempt(w, &c, req, (size_t)reqlen);
        if (cls < 0) break;
        if (!w->reuse) conn_close(&c);
        if (cls == C_REFUSED || cls == C_CONNECT_ERR || cls == C_SEND_FAIL) {
            sleep_ns(NS_PER_MS); /* the gate is closed: knock again, but not in a tight loop */
        } else if (w->kind == K_KA && (w->idx & 1) && cfg.think_ms > 0) {
            /* Odd keep-alive threads pause (their connection is mostly idle when the shutdown
             * comes: the server's idle close races their next request). Even ones go back to
             * back: the server sees the next request right after its response, the widest
             * window for a server that closes after responding without "Connection: close". */
            sleep_ns((int64_t)(rnd(w) % ((uint64_t)cfg.think_ms * 1000 + 1)) * 1000);
        }
    }
    conn_close(&c);
    return NULL;
}

/* ---- the server process ---- */

static pid_t g_child = -1;
static int g_pidfd = -1;

/* --hold-socket: the listening socket the probe keeps open across the server's restarts,
 * handed to each instance as systemd would (descriptor 3, LISTEN_FDS=1, LISTEN_PID). */
static int g_hold_fd = -1;
static char **g_envp;
#define PID_DIGITS 10
static char g_listen_pid[sizeof "LISTEN_PID=" + PID_DIGITS];

static int hold_socket_open(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)cfg.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0) {
        fprintf(stderr, "ugate-probe: --hold-socket: 127.0.0.1:%d: %s\n", cfg.port,
                strerror(errno));
        return -1;
    }
    extern char **environ;
    size_t n = 0;
    while (environ[n]) n++;
    g_envp = calloc(n + 3, sizeof *g_envp);
    if (!g_envp) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "LISTEN_", 7)) g_envp[k++] = environ[i];
    snprintf(g_listen_pid, sizeof g_listen_pid, "LISTEN_PID=%0*d", PID_DIGITS, 0);
    g_envp[k++] = "LISTEN_FDS=1";
    g_envp[k++] = g_listen_pid;
    g_hold_fd = fd;
    return 0;
}

/* In the child: the held socket at 3 and its pid in LISTEN_PID (async-signal-safe only). */
static void pass_held_socket(void) {
    char *d = g_listen_pid + sizeof "LISTEN_PID=" - 1;
    unsigned long pid = (unsigned long)getpid();
    for (int i = PID_DIGITS - 1; i >= 0; i--, pid /= 10) d[i] = (char)('0' + pid % 10);
    int tmp = fcntl(g_hold_fd, F_DUPFD_CLOEXEC, 64);
    if (tmp < 0 || dup2(tmp, 3) < 0) _exit(126);
}

static int spawn_instance(pid_t *out) {
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) return -errno;
    int logfd = open(cfg.server_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        int e = errno;
        fprintf(stderr, "ugate-probe: %s: %s\n", cfg.server_log, strerror(e));
        close(pfd[0]);
        close(pfd[1]);
        return -e;
    }
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        close(logfd);
        if (nullfd >= 0) close(nullfd);
        return -e;
    }
    if (pid == 0) {
        /* child: own process group, default signal dispositions, output to the log */
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (nullfd >= 0) dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        if (g_hold_fd >= 0) {
            pass_held_socket();
            execvpe(cfg.cmd[0], cfg.cmd, g_envp);
        }
        execvp(cfg.cmd[0], cfg.cmd);
        int e = errno;
        ssize_t wr = write(pfd[1], &e, sizeof e);
        (void)wr;
        _exit(127);
    }
    setpgid(pid, pid); /* both sides, so there is no window where the group does not exist */
    close(pfd[1]);
    close(logfd);
    if (nullfd >= 0) close(nullfd);
    int e = 0;
    ssize_t n;
    do {
        n = read(pfd[0], &e, sizeof e);
    } while (n < 0 && errno == EINTR);
    close(pfd[0]);
    *out = pid;
    if (n == (ssize_t)sizeof e) {
        fprintf(stderr, "ugate-probe: cannot execute %s: %s\n", cfg.cmd[0], strerror(e));
        return -e;
    }
    return 0;
}

static int spawn_server(void) {
    pid_t pid = -1;
    int rc = spawn_instance(&pid);
    if (pid < 0) return rc;
    g_child = pid;
#ifdef SYS_pidfd_open
    g_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#else
    g_pidfd = -1;
#endif
    return rc;
}

/* Has the server exited? Leaves it unreaped (a zombie keeps its pid and group id ours). */
static bool server_exited(void) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)g_child, &si, WEXITED | WNOHANG | WNOWAIT) < 0) return true;
    return si.si_pid == g_child;
}

/* Wait until the server exits or the deadline passes; returns true if it exited. */
static bool wait_server_exit(int64_t deadline) {
    for (;;) {
        if (server_exited()) return true;
        int ms = poll_ms(deadline);
        if (ms == 0) return false;
        if (g_pidfd >= 0) {
            struct pollfd pfd = {.fd = g_pidfd, .events = POLLIN};
            (void)poll(&pfd, 1, ms);
        } else {
            sleep_ns(NS_PER_MS / 5); /* no pidfd: poll the status every 0.2 ms */
        }
    }
}

/* SIGKILL what is left of the server's group, reap the server. Returns its wait status. */
static int reap_server(void) {
    int st = 0;
    if (g_child > 0) {
        /* Our child's group: its pid (and so the group id) stays ours until we reap it. */
        (void)kill(-g_child, SIGKILL);
        if (wait_server_exit(now_ns() + 5000 * NS_PER_MS)) {
            while (waitpid(g_child, &st, 0) < 0 && errno == EINTR) {
            }
        } else {
            fprintf(stderr, "ugate-probe: server pid %d survives SIGKILL; not reaped\n",
                    (int)g_child);
            st = -1;
        }
    }
    if (g_pidfd >= 0) close(g_pidfd);
    g_pidfd = -1;
    g_child = -1;
    return st;
}

static int exit_code(int st) {
    if (st == -1) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return -1;
}

/* One GET / outside the load, for readiness. 1: complete response; 0: not (yet); -1: refused */
static int get_once(int timeout_ms) {
    int64_t deadline = now_ns() + (int64_t)timeout_ms * NS_PER_MS;
    int fd = connect_loopback(deadline);
    if (fd < 0) return fd == -ECONNREFUSED ? -1 : 0;
    char req[128];
    int len = snprintf(req, sizeof req,
                       "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: ugate-probe\r\n"
                       "Connection: close\r\n\r\n",
                       cfg.port);
    int ok = 0;
    if (send_all(fd, req, (size_t)len, deadline) == 0) {
        struct parser p;
        int err;
        parser_init(&p);
        ok = read_response(fd, &p, deadline, &err) == RX_DONE;
    }
    close(fd);
    return ok;
}

/* ---- one run ---- */

struct result {
    struct counts c;
    int exit_code;
    int bad_successor_exits; /* later instances (upgrades, restarts) that did not exit 0 */
    bool killed, died_early, lost_successor;
    double ready_ms;           /* signal to the first successor accepting (its pid file), or -1 */
    double exit_ms, refuse_ms; /* refuse_ms < 0: none */
};

static struct worker *g_workers;

static void print_line(const char *label, const struct counts *c, int exit_code, double exit_ms,
                       double refuse_ms, const char *extra) {
    const char *sfx = exit_code == INT_MIN ? "_max" : ""; /* totals: maxima over the runs */
    printf("%s:", label);
    for (int i = 0; i < C_NCLASS; i++) printf(" %s=%" PRIu64, cls_name[i], c->n[i]);
    printf(" non2xx=%" PRIu64 " slow_connect=%" PRIu64, c->non2xx, c->slow_connects);
    if (exit_code != INT_MIN) printf(" exit=%d", exit_code);
    printf(" exit_ms%s=%.1f", sfx, exit_ms);
    if (refuse_ms < 0)
        printf(" refuse_ms%s=-1", sfx);
    else
        printf(" refuse_ms%s=%.1f", sfx, refuse_ms);
    printf("%s\n", extra);
    fflush(stdout);
}

static void report_events(int nthreads, int64_t sig) {
    int printed = 0, total = 0;
    for (int t = 0; t < nthreads; t++) total += g_workers[t].nev;
    if (total == 0) return;
    logf_("  failures, connect_err, send_fail (first %d per thread, ms from the signal):\n",
          EVENTS_PER_THREAD);
    for (int t = 0; t < nthreads && printed < EVENTS_PRINTED; t++) {
        const struct worker *w = &g_workers[t];
        for (int i = 0; i < w->nev && printed < EVENTS_PRINTED; i++, printed++) {
            const struct event *e = &w->ev[i];
            char sent[32] = "-";
            if (e->t_sent) snprintf(sent, sizeof sent, "%.2f", ms_since(sig, e->t_sent));
            logf_("    %-14s %s#%d req#%u connect@%.2f sent@%s end@%.2f bytes=%" PRIu64
                  " status=%d err=%s\n",
                  cls_name[e->cls], kind_name[e->kind], w->idx, e->nreq + 1,
                  ms_since(sig, e->t_connect), sent, ms_since(sig, e->t_end), e->nbytes, e->status,
                  e->err ? strerror(e->err) : "-");
        }
    }
    if (printed < total) logf_("    ... %d more\n", total - printed);
}

/* ---- successors: upgrades and restarts in a row ---- */

static pid_t read_pid_file(void) {
    FILE *f = cfg.pid_file ? fopen(cfg.pid_file, "r") : NULL;
    int pid = -1;
    if (!f) return -1;
    if (fscanf(f, "%d", &pid) != 1) pid = -1;
    fclose(f);
    return pid;
}

/* A successor is ours to reap: a child (--hold-socket) or adopted (we are a subreaper). */
static bool wait_pid_exit(pid_t pid, int64_t deadline, int *status) {
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) return true;
        if (now_ns() > deadline) return false;
        sleep_ns(2 * NS_PER_MS);
    }
}

/* The instance after `old`: started here on the held socket, or the one the pid file names
 * once it is not `old` (the upgraded process writes it when it accepts). */
static pid_t next_instance(pid_t old) {
    if (g_hold_fd >= 0) {
        pid_t pid = -1;
        return spawn_instance(&pid) == 0 ? pid : -1;
    }
    int64_t deadline = now_ns() + (int64_t)cfg.max_ms * NS_PER_MS;
    for (;;) {
        pid_t pid = read_pid_file();
        if (pid > 0 && pid != old && kill(pid, 0) == 0) return pid;
        if (now_ns() > deadline) return -1;
        sleep_ns(2 * NS_PER_MS);
    }
}

/* --then-signal: once old's successor is ready (the pid file names another live pid), wait
 * --then-ms and send old the second signal (nginx: USR2 starts the new master, QUIT then
 * ends the old one). */
static void then_signal(pid_t old, int64_t deadline) {
    if (!cfg.then_sig) return;
    for (;;) {
        pid_t pid = read_pid_file();
        if ((pid > 0 && pid != old && kill(pid, 0) == 0) || now_ns() > deadline) break;
        sleep_ns(NS_PER_MS);
    }
    sleep_ns((int64_t)cfg.then_ms * NS_PER_MS);
    (void)kill(old, cfg.then_sig);
}

/* After the first instance exited: each next one serves the load --successor-ms, then is
 * signalled in turn, until --upgrades instances have been signalled. The last one, left
 * running, is returned for the clean-up. */
static pid_t successors(int run, struct result *res) {
    pid_t old = g_child, cur = -1;
    for (int u = 1;; u++) {
        cur = next_instance(old);
        if (u == 1 && cur > 0 && res->ready_ms < 0)
            res->ready_ms = ms_since(atomic_load(&g_sig_ns), now_ns());
        if (cur <= 0) {
            res->lost_successor = true;
            logf_("run %d: no successor after signal %d\n", run, u);
            return -1;
        }
        sleep_ns((int64_t)cfg.successor_ms * NS_PER_MS);
        if (u == cfg.upgrades) return cur;
        if (kill(cur, cfg.sig) < 0) logf_("run %d: kill %d: %s\n", run, (int)cur, strerror(errno));
        then_signal(cur, now_ns() + (int64_t)cfg.max_ms * NS_PER_MS);
        int st = 0;
        if (!wait_pid_exit(cur, now_ns() + (int64_t)cfg.max_ms * NS_PER_MS, &st)) {
            res->killed = true;
            (void)kill(cur, SIGKILL);
            (void)wait_pid_exit(cur, now_ns() + 5000 * NS_PER_MS, &st);
            logf_("run %d: instance %d still running %d ms after the signal: SIGKILLed\n", run,
                  (int)cur, cfg.max_ms);
        }
        if (exit_code(st) != 0) res->bad_successor_exits++;
        old = cur;
    }
}

/* Returns 0, or -1 on a setup error (already reported). */
static int run_once(int run, struct result *res) {
    memset(res, 0, sizeof *res);
    res->refuse_ms = -1;

    /* 1. nothing may answer on the port yet (with --hold-socket it is ours, and queues) */
    int64_t t_free = now_ns() + 3000 * NS_PER_MS;
    for (; g_hold_fd < 0;) {
        int64_t d = now_ns() + 200 * NS_PER_MS;
        int fd = connect_loopback(d);
        if (fd == -ECONNREFUSED) break;
        if (fd >= 0) close(fd);
        if (now_ns() > t_free) {
            if (fd >= 0)
                fprintf(stderr, "ugate-probe: something already listens on 127.0.0.1:%d\n",
                        cfg.port);
            else
                fprintf(stderr, "ugate-probe: 127.0.0.1:%d is neither free nor answering: %s\n",
                        cfg.port, strerror(-fd));
            return -1;
        }
        sleep_ns(50 * NS_PER_MS);
    }

    /* 2. start the server, 3. wait until it answers */
    int64_t t_start = now_ns();
    if (spawn_server() < 0) {
        if (g_child > 0) reap_server();
        return -1;
    }
    int64_t ready_deadline = t_start + (int64_t)cfg.max_ms * NS_PER_MS;
    for (;;) {
        if (cfg.follow_pid && server_exited()) { /* it daemonized: follow the pid file */
            int st = 0;
            while (waitpid(g_child, &st, 0) < 0 && errno == EINTR) {
            }
            pid_t pid = -1;
            while (exit_code(st) == 0 && now_ns() < ready_deadline &&
                   !((pid = read_pid_file()) > 0 && pid != g_child && kill(pid, 0) == 0))
                sleep_ns(2 * NS_PER_MS);
            if (exit_code(st) != 0 || pid <= 0 || kill(pid, 0) != 0) {
                fprintf(stderr, "ugate-probe: the daemon did not start (exit=%d), see %s\n",
                        exit_code(st), cfg.server_log);
                g_child = -1;
                return -1;
            }
            g_child = pid; /* adopted: we are a subreaper */
#ifdef SYS_pidfd_open
            if (g_pidfd >= 0) close(g_pidfd);
            g_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
        }
        if (server_exited()) {
            int st = reap_server();
            fprintf(stderr, "ugate-probe: server exited during start-up (exit=%d), see %s\n",
                    exit_code(st), cfg.server_log);
            return -1;
        }
        if (get_once(1000) == 1) break;
        if (now_ns() > ready_deadline) {
            reap_server();
            fprintf(stderr, "ugate-probe: server did not answer GET / within %d ms\n", cfg.max_ms);
            return -1;
        }
        sleep_ns(10 * NS_PER_MS);
    }
    logf_("run %d: server pid %d ready after %.1f ms\n", run, (int)g_child,
          ms_since(t_start, now_ns()));

    /* 4. load */
    atomic_store(&g_sig_ns, 0);
    atomic_store(&g_kill_ns, 0);
    atomic_store(&g_stop, 0);
    int nthreads = cfg.ka + cfg.cpr + cfg.slow;
    int64_t t_load = now_ns();
    int64_t hard_end =
        t_load + (int64_t)(cfg.warmup_ms + cfg.max_ms + 2 * cfg.req_timeout_ms + 5000) * NS_PER_MS +
        (int64_t)(cfg.upgrades - 1) * (cfg.max_ms + cfg.successor_ms) * NS_PER_MS;
    int started = 0;
    for (int t = 0; t < nthreads; t++) {
        struct worker *w = &g_workers[t];
        memset(w, 0, sizeof *w);
        if (t < cfg.ka) {
            w->kind = K_KA;
            w->idx = t;
            w->reuse = true;
        } else if (t < cfg.ka + cfg.cpr) {
            w->kind = K_CPR;
            w->idx = t - cfg.ka;
            w->reuse = false;
        } else {
            w->kind = K_SLOW;
            w->idx = t - cfg.ka - cfg.cpr;
            w->reuse = w->idx & 1;
        }
        w->rng = (uint64_t)now_ns() ^ ((uint64_t)(t + 1) * UINT64_C(0x9E3779B97F4A7C15)) ^
                 ((uint64_t)run << 32);
        if (w->rng == 0) w->rng = 1;
        w->hard_end = hard_end;
        int e = pthread_create(&w->th, NULL, worker_main, w);
        if (e) {
            fprintf(stderr, "ugate-probe: pthread_create: %s\n", strerror(e));
            break;
        }
        started++;
    }
    if (started < nthreads) {
        atomic_store(&g_stop, 1);
        for (int t = 0; t < started; t++) pthread_join(g_workers[t].th, NULL);
        reap_server();
        return -1;
    }

    /* 5. signal mid-load */
    sleep_ns((int64_t)cfg.warmup_ms * NS_PER_MS);
    if (server_exited()) {
        res->died_early = true;
        logf_("run %d: the server died under load before the signal\n", run);
    }
    int64_t t_sig = now_ns();
    atomic_store(&g_sig_ns, t_sig);
    if (kill(g_child, cfg.sig) < 0) logf_("run %d: kill: %s\n", run, strerror(errno));

    /* 6. wait for the exit, bounded (an upgrade: and note when the successor is ready, which
     * its pid file says, while the old one still drains) */
    res->ready_ms = -1;
    bool exited;
    if (cfg.successor_ms && g_hold_fd < 0) {
        int64_t deadline = t_sig + (int64_t)cfg.max_ms * NS_PER_MS;
        bool then_sent = !cfg.then_sig;
        int64_t then_at = 0;
        while (!(exited = server_exited()) && now_ns() < deadline) {
            pid_t pid = read_pid_file();
            if (res->ready_ms < 0 && pid > 0 && pid != g_child && kill(pid, 0) == 0) {
                res->ready_ms = ms_since(t_sig, now_ns());
                then_at = now_ns() + (int64_t)cfg.then_ms * NS_PER_MS;
            }
            if (!then_sent && then_at && now_ns() >= then_at) {
                (void)kill(g_child, cfg.then_sig);
                then_sent = true;
            }
            sleep_ns(NS_PER_MS / 2);
        }
    } else {
        exited = wait_server_exit(t_sig + (int64_t)cfg.max_ms * NS_PER_MS);
    }
    int64_t t_exit = now_ns();
    if (!exited) {
        res->killed = true;
        atomic_store(&g_kill_ns, t_exit);
        (void)kill(-g_child, SIGKILL);
        logf_("run %d: server still running %d ms after the signal: SIGKILLed\n", run, cfg.max_ms);
        (void)wait_server_exit(t_exit + 5000 * NS_PER_MS);
    }
    res->exit_ms = ms_since(t_sig, t_exit);
    /* A successor has the port now; it serves the load a while, and with --upgrades N is
     * itself signalled in turn, N times in a row. */
    pid_t last = -1;
    if (cfg.successor_ms && exited) last = successors(run, res);

    /* 7. stop the load, clean up */
    atomic_store(&g_stop, 1);
    for (int t = 0; t < nthreads; t++) pthread_join(g_workers[t].th, NULL);
    res->exit_code = exit_code(reap_server());
    if (last > 0) { /* the last successor (and its group): a child of ours, or adopted */
        (void)kill(-last, SIGKILL);
        (void)kill(last, SIGKILL);
        int st;
        (void)wait_pid_exit(last, now_ns() + 5000 * NS_PER_MS, &st);
    }
    if (cfg.successor_ms || cfg.follow_pid) { /* whatever else we adopted (nginx's workers) */
        int64_t until = now_ns() + 2000 * NS_PER_MS;
        for (pid_t r; (r = waitpid(-1, NULL, WNOHANG)) != -1 && now_ns() < until;)
            if (r == 0) sleep_ns(2 * NS_PER_MS);
    }

    for (int t = 0; t < nthreads; t++) {
        const struct counts *c = &g_workers[t].c;
        for (int i = 0; i < C_NCLASS; i++) res->c.n[i] += c->n[i];
        res->c.non2xx += c->non2xx;
        res->c.slow_connects += c->slow_connects;
        res->c.reconnects += c->reconnects;
        res->c.open_at_signal += c->open_at_signal;
        res->c.answered_late += c->answered_late;
        if (c->first_refuse_set &&
            (!res->c.first_refuse_set || c->first_refuse_ns < res->c.first_refuse_ns)) {
            res->c.first_refuse_set = 1;
            res->c.first_refuse_ns = c->first_refuse_ns;
        }
    }
    if (res->c.first_refuse_set) res->refuse_ms = ms_since(t_sig, res->c.first_refuse_ns);

    char label[32];
    snprintf(label, sizeof label, "run %d", run);
    char extra[64] = "";
    if (cfg.successor_ms)
        snprintf(extra, sizeof extra, " successor_ready_ms=%.1f bad_successor_exits=%d",
                 res->ready_ms, res->bad_successor_exits);
    if (res->killed) strcat(extra, " killed");
    print_line(label, &res->c, res->exit_code, res->exit_ms, res->refuse_ms, extra);
    logf_("  open at the signal %" PRIu64 ", answered after the signal %" PRIu64
          ", keep-alive closes seen before sending %" PRIu64 "\n",
          res->c.open_at_signal, res->c.answered_late, res->c.reconnects);
    report_events(nthreads, t_sig);
    return 0;
}

/* ---- arguments ---- */

static int parse_int(const char *opt, const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "ugate-probe: %s: expected an integer in [%d, %d], got '%s'\n", opt, lo, hi,
                s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv) {
    static const struct {
        const char *name;
        int *val;
        int lo, hi;
    } ints[] = {
        {"--port", &cfg.port, 1, 65535},
        {"--runs", &cfg.runs, 1, 100000},
        {"--ka", &cfg.ka, 0, 512},
        {"--cpr", &cfg.cpr, 0, 256},
        {"--slow", &cfg.slow, 0, 256},
        {"--sleep-ms", &cfg.sleep_ms, 1, 60000},
        {"--think-ms", &cfg.think_ms, 0, 10000},
        {"--warmup-ms", &cfg.warmup_ms, 0, 600000},
        {"--max-ms", &cfg.max_ms, 1, 600000},
        {"--req-timeout-ms", &cfg.req_timeout_ms, 1, 600000},
        {"--gate-grace-ms", &cfg.gate_grace_ms, 0, 600000},
        {"--drain-delay-ms", &cfg.drain_delay_ms, 0, 600000},
        {"--successor-ms", &cfg.successor_ms, 0, 600000},
        {"--upgrades", &cfg.upgrades, 1, 1000},
        {"--then-ms", &cfg.then_ms, 0, 600000},
    };
    int i = 1;
    for (; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            cfg.quiet = true;
            continue;
        }
        if (strcmp(a, "--hold-socket") == 0) {
            cfg.hold_socket = 1;
            continue;
        }
        if (strcmp(a, "--follow-pid-file") == 0) {
            cfg.follow_pid = 1;
            continue;
        }
        /* --name VALUE or --name=VALUE */
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        bool known = false;
        if (strcmp(name, "--signal") == 0 || strcmp(name, "--server-log") == 0 ||
            strcmp(name, "--pid-file") == 0 || strcmp(name, "--then-signal") == 0)
            known = true;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
            if (strcmp(name, ints[k].name) == 0) known = true;
        if (!known) {
            fprintf(stderr, "ugate-probe: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ugate-probe: %s needs a value\n", name);
                return -1;
            }
            val = argv[++i];
        }
        if (strcmp(name, "--signal") == 0 || strcmp(name, "--then-signal") == 0) {
            const char *s = val;
            int sig = 0;
            if (strncasecmp(s, "SIG", 3) == 0) s += 3;
            if (strcasecmp(s, "TERM") == 0)
                sig = SIGTERM;
            else if (strcasecmp(s, "INT") == 0)
                sig = SIGINT;
            else if (strcasecmp(s, "QUIT") == 0)
                sig = SIGQUIT;
            else if (strcasecmp(s, "USR2") == 0)
                sig = SIGUSR2;
            else {
                fprintf(stderr, "ugate-probe: %s: TERM, INT, QUIT or USR2, got '%s'\n", name, val);
                return -1;
            }
            if (strcmp(name, "--signal") == 0)
                cfg.sig = sig;
            else
                cfg.then_sig = sig;
            continue;
        }
        if (strcmp(name, "--server-log") == 0) {
            cfg.server_log = val;
            continue;
        }
        if (strcmp(name, "--pid-file") == 0) {
            cfg.pid_file = val;
            continue;
        }
        for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
            if (strcmp(name, ints[k].name) == 0 &&
                parse_int(name, val, ints[k].lo, ints[k].hi, ints[k].val) < 0)
                return -1;
    }
    if (i >= argc) {
        fprintf(stderr, "ugate-probe: no server command (after --); see --help\n");
        return -1;
    }
    cfg.cmd = &argv[i];
    if (cfg.port == 0) {
        fprintf(stderr, "ugate-probe: --port is required\n");
        return -1;
    }
    if (cfg.ka + cfg.cpr + cfg.slow == 0 || cfg.ka + cfg.cpr + cfg.slow > MAX_THREADS) {
        fprintf(stderr, "ugate-probe: need 1..%d load threads\n", MAX_THREADS);
        return -1;
    }
    if ((cfg.upgrades > 1 || cfg.hold_socket) && !cfg.successor_ms) {
        fprintf(stderr, "ugate-probe: --upgrades and --hold-socket need --successor-ms\n");
        return -1;
    }
    if (cfg.follow_pid && !cfg.pid_file) {
        fprintf(stderr, "ugate-probe: --follow-pid-file needs --pid-file\n");
        return -1;
    }
    if (cfg.successor_ms && !cfg.hold_socket && !cfg.pid_file) {
        fprintf(stderr, "ugate-probe: --successor-ms needs --pid-file (to find each successor) "
                        "or --hold-socket\n");
        return -1;
    }
    if (cfg.slow > 0 && cfg.req_timeout_ms <= cfg.sleep_ms * 4 / 3) {
        fprintf(stderr, "ugate-probe: --req-timeout-ms must exceed 4/3 x --sleep-ms\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (parse_args(argc, argv) < 0) return 2;
    signal(SIGPIPE, SIG_IGN);
    /* Successors outlive the process that started them: adopted here, we reap them. */
    if ((cfg.successor_ms || cfg.follow_pid) && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
        perror("ugate-probe: prctl(PR_SET_CHILD_SUBREAPER)"); /* successors would not be ours */
        return 2;
    }
    if (cfg.hold_socket && hold_socket_open() < 0) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);

    g_workers = calloc((size_t)(cfg.ka + cfg.cpr + cfg.slow), sizeof *g_workers);
    if (!g_workers) {
        perror("ugate-probe: calloc");
        return 2;
    }

    struct counts tot;
    memset(&tot, 0, sizeof tot);
    double max_exit_ms = 0, max_refuse_ms = -1;
    int nonzero_exits = 0, killed = 0, died_early = 0;
    bool failed = false;
    for (int r = 1; r <= cfg.runs; r++) {
        struct result res;
        if (run_once(r, &res) < 0) {
            free(g_workers);
            return 2;
        }
        for (int i = 0; i < C_NCLASS; i++) {
            tot.n[i] += res.c.n[i];
            if (cls_is_failure(i) && res.c.n[i]) failed = true;
        }
        tot.non2xx += res.c.non2xx;
        tot.slow_connects += res.c.slow_connects;
        if (cfg.successor_ms && res.c.slow_connects) failed = true;
        nonzero_exits += res.bad_successor_exits;
        if (res.lost_successor) failed = true;
        if (res.exit_ms > max_exit_ms) max_exit_ms = res.exit_ms;
        if (res.refuse_ms > max_refuse_ms) max_refuse_ms = res.refuse_ms;
        if (res.exit_code != 0) nonzero_exits++;
        if (res.killed) killed++;
        if (res.died_early) {
            died_early++;
            failed = true;
        }
    }
    char label[48], extra[96];
    snprintf(label, sizeof label, "total (%d run%s)", cfg.runs, cfg.runs == 1 ? "" : "s");
    snprintf(extra, sizeof extra, " nonzero_exits=%d killed=%d died_early=%d", nonzero_exits,
             killed, died_early);
    print_line(label, &tot, INT_MIN, max_exit_ms, max_refuse_ms, extra);
    free(g_workers);
    return failed ? 1 : 0;
}
