/* ugate-serve: the demo server.
 *
 *   GET  /            200 text/plain "Hello, World!"
 *   GET  /sleep?ms=N  200 text/plain "OK" after N ms (a loop timer; the loop never blocks)
 *   POST /echo        200 with the request body
 *   GET  /healthz     200 "ok"; 503 "draining" once shutdown has begun
 *   anything else     404
 *
 * --admin HOST:PORT starts a second, one-loop server on that address (never the public
 * one) that serves GET /metrics (ug_server_metrics of the main server, Prometheus text
 * format) and GET /debug/conns (ug_server_debug_json: the gate, the drain, every
 * connection). It is started before the main server runs and stopped only after the main
 * server's run has returned, so the drain can be watched; its own requests are not counted
 * in the main server's metrics.
 *
 * --access-log PATH (or - for standard output) writes one Combined Log Format line per
 * request of the main server (ug_access_log).
 *
 * SIGTERM / SIGINT start a graceful shutdown; a second SIGINT forces the immediate variant.
 * Exit status: 0 when everything drained, 1 when the deadline forced anything, 2 on error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ugate.h>
#include <unistd.h>
#include <zlib.h>

#include "serve_lifecycle.h"

static ug_server *g_srv;
static ug_shutdown_opts g_sd;
static volatile sig_atomic_t g_sigint_count;

static ug_handler_result hello(ug_request *req, void *user) {
    (void)user;
    static const char body[] = "Hello, World!";
    ug_resp_send(req, 200, "text/plain", body, sizeof body - 1);
    return UG_DONE;
}

static void sleep_done(ug_request *req, void *user) {
    (void)user;
    ug_resp_send(req, 200, "text/plain", "OK", 2);
}

static ug_handler_result sleep_handler(ug_request *req, void *user) {
    (void)user;
    ug_str v = ug_req_query_param(req, "ms");
    unsigned long ms = 0;
    for (size_t i = 0; v.ptr && i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9' || ms > 3600000) {
            ug_resp_send(req, 400, "text/plain", "bad ms\n", 7);
            return UG_DONE;
        }
        ms = ms * 10 + (unsigned long)(v.ptr[i] - '0');
    }
    if (ms > 3600000) ms = 3600000;
    if (ug_req_timer(req, (uint32_t)ms, sleep_done, NULL) < 0) {
        ug_resp_send(req, 503, "text/plain", "no timer\n", 9);
        return UG_DONE;
    }
    return UG_LATER; /* nothing to cancel: the timer dies with the request */
}

static ug_handler_result echo(ug_request *req, void *user) {
    (void)user;
    ug_str body = ug_req_body(req);
    ug_str ct = ug_req_header(req, "Content-Type");
    char ctype[128] = "application/octet-stream";
    if (ct.ptr && ct.len < sizeof ctype) {
        memcpy(ctype, ct.ptr, ct.len);
        ctype[ct.len] = 0;
    }
    if (ug_resp_send(req, 200, ctype, body.ptr, body.len) < 0)
        ug_resp_send(req, 200, "application/octet-stream", body.ptr, body.len);
    return UG_DONE;
}

/* ---- POST /upload: a streamed body of any size, in constant memory */

typedef struct upload {
    uint64_t bytes;
    uLong crc;
} upload;

static void upload_cancelled(ug_request *req, ug_cancel_reason why, void *user) {
    (void)req;
    (void)why;
    free(user);
}

static void upload_piece(ug_request *req, const void *data, size_t len, int end, void *user) {
    upload *u = user;
    /* zlib's crc32 takes a uInt length: feed it in pieces that fit. */
    for (size_t off = 0; off < len;) {
        uInt n = len - off > 1u << 30 ? 1u << 30 : (uInt)(len - off);
        u->crc = crc32(u->crc, (const Bytef *)data + off, n);
        off += n;
    }
    u->bytes += len;
    if (!end) return;
    char msg[64];
    int n = snprintf(msg, sizeof msg, "bytes=%llu crc32=%08lx\n", (unsigned long long)u->bytes,
                     (unsigned long)u->crc);
    ug_req_on_cancel(req, NULL, NULL); /* answered here: freed here */
    ug_resp_send(req, 200, "text/plain", msg, (size_t)n);
    free(u);
}

static ug_handler_result upload_handler(ug_request *req, void *user) {
    (void)user;
    upload *u = malloc(sizeof *u);
    if (!u) {
        ug_resp_send(req, 503, "text/plain", "out of memory\n", 14);
        return UG_DONE;
    }
    u->bytes = 0;
    u->crc = crc32(0L, Z_NULL, 0);
    ug_req_on_cancel(req, upload_cancelled, u);
    if (ug_req_read_body(req, upload_piece, u) < 0) {
        ug_req_on_cancel(req, NULL, NULL);
        free(u);
        ug_resp_send(req, 500, "text/plain", "cannot read the body\n", 21);
        return UG_DONE;
    }
    return UG_LATER;
}

/* --middleware N: middlewares that only pass the request on (what a chain costs). */
static ug_handler_result pass_on(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    ug_next(req, next);
    return UG_DONE;
}

static ug_handler_result healthz(ug_request *req, void *user) {
    (void)user;
    if (ug_server_state(ug_req_server(req)) != UG_GATE_OPEN)
        ug_resp_send(req, 503, "text/plain", "draining", 8);
    else
        ug_resp_send(req, 200, "text/plain", "ok", 2);
    return UG_DONE;
}

/* ---- the admin server: one loop, its own thread */

static ug_server *g_admin;
static char g_metrics[65536]; /* the admin server has one loop: one handler at a time */

static ug_handler_result metrics(ug_request *req, void *user) {
    (void)user;
    int n = ug_server_metrics(g_srv, g_metrics, sizeof g_metrics);
    if (n < 0) {
        ug_resp_send(req, 500, "text/plain", "metrics do not fit\n", 19);
        return UG_DONE;
    }
    ug_resp_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", g_metrics, (size_t)n);
    return UG_DONE;
}

static ug_handler_result debug_conns(ug_request *req, void *user) {
    (void)user;
    char *dump = NULL;
    size_t len = 0;
    int rc = ug_server_debug_json(g_srv, 2000, &dump, &len);
    if (rc < 0) {
        char msg[128];
        int n = snprintf(msg, sizeof msg, "debug dump failed: %s\n", strerror(-rc));
        ug_resp_send(req, 503, "text/plain", msg, (size_t)n);
        return UG_DONE;
    }
    if (ug_resp_send(req, 200, "application/json", dump, len) < 0) /* copied, or refused */
        ug_resp_send(req, 503, "text/plain", "dump too large\n", 15);
    free(dump);
    return UG_DONE;
}

static void *admin_thread(void *arg) {
    (void)arg;
    ug_server_run(g_admin, NULL);
    return NULL;
}

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (127.0.0.1): host (in buf) and port. -1 if malformed. */
static int split_host_port(const char *s, char *buf, size_t cap, uint16_t *port) {
    const char *colon = strrchr(s, ':');
    if (!colon || !colon[1]) return -1;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') h = s + 1, hl -= 2;
    if (hl >= cap) return -1;
    memcpy(buf, h, hl);
    buf[hl] = '\0';
    if (!hl) snprintf(buf, cap, "127.0.0.1");
    char *end;
    errno = 0;
    unsigned long v = strtoul(colon + 1, &end, 10);
    if (errno || *end || v > 65535) return -1;
    *port = (uint16_t)v;
    return 0;
}

static void on_signal(int sig) {
    /* During an upgrade the supervisor undoes it first, then stops the server. */
    int immediate = sig == SIGINT && g_sigint_count + 1 >= 2;
    if (sig == SIGINT) g_sigint_count++;
    if (lc_request_stop(immediate)) return;
    /* ug_server_shutdown is async-signal-safe: atomics and an eventfd write. */
    if (immediate) {
        ug_shutdown_opts now = g_sd;
        now.immediate = 1;
        ug_server_shutdown(g_srv, &now);
        return;
    }
    ug_server_shutdown(g_srv, &g_sd);
}

static void on_sigusr2(int sig) {
    (void)sig;
    lc_request_upgrade();
}

static void log_line(void *user, ug_log_level lvl, const char *msg) {
    (void)user;
    static const char *names[] = {"error", "warn", "info", "debug"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ld ugate-serve %s: %s\n", when, ts.tv_nsec / 1000000, names[lvl], msg);
}

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: ugate-serve [options]\n"
        "  --host ADDR                 address to listen on (127.0.0.1)\n"
        "  --port N                    port (8080; 0 picks a free one)\n"
        "  --backlog N                 listen backlog (4096)\n"
        "  --backend uring|epoll|auto  I/O backend (auto: io_uring, else epoll)\n"
        "  --threads N|auto            loops, one thread each (auto, the default: one per\n"
        "                              CPU of the affinity mask)\n"
        "  --pin-cpus                  pin loop i to the i-th CPU of the affinity mask\n"
        "  --drain-delay-ms N          lame-duck period after SIGTERM (0)\n"
        "  --drain-timeout-ms N        drain deadline (30000)\n"
        "  --linger-ms N               polite-close and idle-drain linger (1000)\n"
        "  --idle-timeout-ms N         keep-alive idle timeout (60000)\n"
        "  --read-header-timeout-ms N  request line + headers deadline (10000)\n"
        "  --body-timeout-ms N         longest gap between body reads (30000)\n"
        "  --write-timeout-ms N        a send making no progress this long closes (30000)\n"
        "  --handler-timeout-ms N      a deferred request unanswered this long gets 503 (30000)\n"
        "  --max-inflight N            requests in flight before shedding with 503 (8192; 0: "
        "none)\n"
        "  --max-conns N               concurrent connections (16384)\n"
        "  --max-header-bytes N        request line + headers (8192)\n"
        "  --max-headers N             header fields (64)\n"
        "  --max-uri-bytes N           request-target (4096)\n"
        "  --max-body-bytes N          request body (1048576)\n"
        "  --max-output-bytes N        unsent response bytes per connection before that\n"
        "                              client is no longer read (262144; at most 1 GiB)\n"
        "  --admin HOST:PORT           admin listener: GET /metrics (Prometheus) and\n"
        "                              GET /debug/conns (JSON); off unless given; up until\n"
        "                              the main server has drained\n"
        "  --access-log PATH|-         one Combined Log Format line per request (- : stdout)\n"
        "  --pid-file PATH             the serving process's pid, written once accepting\n"
        "  --no-request-ids            no X-Request-Id on responses (by default every\n"
        "                              response has one: the client's if valid, else\n"
        "                              generated; also in the access log)\n"
        "  --max-upload-bytes N        POST /upload: the largest body (1073741824)\n"
        "  --middleware N              N middlewares that only pass requests on (0; for\n"
        "                              measuring what a chain costs)\n"
        "  --upgrade-timeout-ms N      SIGUSR2: how long the successor has to be ready (10000)\n"
        "  --quiet                     log warnings and errors only\n"
        "  --help                      this text\n"
        "Timeouts of 0 are disabled.\n"
        "Signals: SIGTERM/SIGINT drain gracefully; a second SIGINT closes at once; SIGUSR2\n"
        "starts the executable at this one's path with the same arguments, hands it the\n"
        "listening socket once it accepts, then drains and exits (or, if it fails, kills it\n"
        "and goes on serving).\n"
        "systemd: socket activation (LISTEN_FDS) and sd_notify (NOTIFY_SOCKET) are used when\n"
        "set.\n"
        "Exit: 0 drained, 1 the deadline forced connections closed, 2 error.\n");
}

static int parse_u32(const char *s, uint32_t *out) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v > UINT32_MAX) return -1;
    *out = (uint32_t)v;
    return 0;
}

static void quiet_log(void *user, ug_log_level lvl, const char *msg) {
    if (lvl <= UG_LOG_WARN) log_line(user, lvl, msg);
}

int main(int argc, char **argv) {
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.log = log_line;
    cfg.request_ids = 1;
    cfg.threads = UG_THREADS_AUTO;
    enum {
        O_HOST = 256,
        O_PORT,
        O_BACKLOG,
        O_BACKEND,
        O_DELAY,
        O_DTIMEOUT,
        O_LINGER,
        O_IDLE,
        O_RHT,
        O_BODYT,
        O_WRITET,
        O_MAXC,
        O_MHB,
        O_MH,
        O_MURI,
        O_MBODY,
        O_MOUT,
        O_HTO,
        O_MINF,
        O_QUIET,
        O_THREADS,
        O_PIN,
        O_ADMIN,
        O_ALOG,
        O_PIDF,
        O_RID,
        O_NORID,
        O_MUP,
        O_MW,
        O_UPTO,
        O_HELP
    };
    static const struct option opts[] = {
        {"host", required_argument, 0, O_HOST},
        {"port", required_argument, 0, O_PORT},
        {"backlog", required_argument, 0, O_BACKLOG},
        {"backend", required_argument, 0, O_BACKEND},
        {"drain-delay-ms", required_argument, 0, O_DELAY},
        {"drain-timeout-ms", required_argument, 0, O_DTIMEOUT},
        {"linger-ms", required_argument, 0, O_LINGER},
        {"idle-timeout-ms", required_argument, 0, O_IDLE},
        {"read-header-timeout-ms", required_argument, 0, O_RHT},
        {"body-timeout-ms", required_argument, 0, O_BODYT},
        {"write-timeout-ms", required_argument, 0, O_WRITET},
        {"max-conns", required_argument, 0, O_MAXC},
        {"max-header-bytes", required_argument, 0, O_MHB},
        {"max-headers", required_argument, 0, O_MH},
        {"max-uri-bytes", required_argument, 0, O_MURI},
        {"max-body-bytes", required_argument, 0, O_MBODY},
        {"max-output-bytes", required_argument, 0, O_MOUT},
        {"handler-timeout-ms", required_argument, 0, O_HTO},
        {"max-inflight", required_argument, 0, O_MINF},
        {"quiet", no_argument, 0, O_QUIET},
        {"threads", required_argument, 0, O_THREADS},
        {"pin-cpus", no_argument, 0, O_PIN},
        {"admin", required_argument, 0, O_ADMIN},
        {"access-log", required_argument, 0, O_ALOG},
        {"pid-file", required_argument, 0, O_PIDF},
        {"request-ids", no_argument, 0, O_RID},
        {"no-request-ids", no_argument, 0, O_NORID},
        {"max-upload-bytes", required_argument, 0, O_MUP},
        {"middleware", required_argument, 0, O_MW},
        {"upgrade-timeout-ms", required_argument, 0, O_UPTO},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    const char *admin = NULL, *access_log = NULL, *pid_file = NULL;
    uint32_t upgrade_timeout_ms = 10000;
    uint64_t max_upload = 1ull << 30;
    uint32_t middlewares = 0;
    lc_sockets socks;
    lc_init(argv, &socks);
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        uint32_t v = 0;
        if (o == O_THREADS && !strcmp(optarg, "auto")) {
            cfg.threads = UG_THREADS_AUTO;
            continue;
        }
        if (o != O_HOST && o != O_BACKEND && o != O_QUIET && o != O_HELP && o != O_PIN &&
            o != O_ADMIN && o != O_ALOG && o != O_PIDF && o != O_RID && o != O_NORID &&
            o != O_MUP && o != '?' && parse_u32(optarg, &v)) {
            fprintf(stderr, "ugate-serve: bad number for --%s: %s\n", opts[o - O_HOST].name,
                    optarg);
            return 2;
        }
        switch (o) {
        case O_HOST:
            cfg.host = optarg;
            break;
        case O_ADMIN:
            admin = optarg;
            break;
        case O_ALOG:
            access_log = optarg;
            break;
        case O_PIDF:
            pid_file = optarg;
            break;
        case O_RID: /* the default now; kept for the command lines that say it */
            cfg.request_ids = 1;
            break;
        case O_NORID:
            cfg.request_ids = 0;
            break;
        case O_MUP: {
            char *end;
            errno = 0;
            unsigned long long u = strtoull(optarg, &end, 10);
            if (errno || *end || end == optarg || optarg[0] == '-') {
                fprintf(stderr, "ugate-serve: bad number for --max-upload-bytes: %s\n", optarg);
                return 2;
            }
            max_upload = u;
            break;
        }
        case O_MW:
            if (v > 64) {
                fprintf(stderr, "ugate-serve: --middleware takes 0 to 64\n");
                return 2;
            }
            middlewares = v;
            break;
        case O_UPTO:
            upgrade_timeout_ms = v < 1 ? 1 : v > 600000 ? 600000 : v;
            break;
        case O_PORT:
            if (v > 65535) {
                fprintf(stderr, "ugate-serve: bad port %s\n", optarg);
                return 2;
            }
            cfg.port = (uint16_t)v;
            break;
        case O_BACKLOG:
            cfg.backlog = (int)v;
            break;
        case O_BACKEND:
            if (!strcmp(optarg, "uring") || !strcmp(optarg, "io_uring"))
                cfg.backend = UG_BACKEND_URING;
            else if (!strcmp(optarg, "epoll"))
                cfg.backend = UG_BACKEND_EPOLL;
            else if (!strcmp(optarg, "auto"))
                cfg.backend = UG_BACKEND_AUTO;
            else {
                fprintf(stderr, "ugate-serve: --backend must be uring, epoll or auto\n");
                return 2;
            }
            break;
        case O_DELAY:
            g_sd.drain_delay_ms = v;
            break;
        case O_DTIMEOUT:
            g_sd.drain_timeout_ms = v;
            break;
        case O_LINGER:
            cfg.linger_ms = v;
            break;
        case O_IDLE:
            cfg.idle_timeout_ms = v;
            break;
        case O_RHT:
            cfg.read_header_timeout_ms = v;
            break;
        case O_BODYT:
            cfg.body_timeout_ms = v;
            break;
        case O_WRITET:
            cfg.write_timeout_ms = v;
            break;
        case O_MAXC:
            cfg.max_conns = v;
            break;
        case O_MHB:
            cfg.max_header_bytes = v;
            break;
        case O_MH:
            cfg.max_headers = v;
            break;
        case O_MURI:
            cfg.max_uri_bytes = v;
            break;
        case O_MBODY:
            cfg.max_body_bytes = v;
            break;
        case O_MOUT:
            cfg.max_output_bytes = v;
            break;
        case O_HTO:
            cfg.handler_timeout_ms = v;
            break;
        case O_MINF:
            cfg.max_inflight = v ? v : UG_UNLIMITED;
            break;
        case O_THREADS:
            if (v == 0 || v > UG_MAX_LOOPS) {
                fprintf(stderr, "ugate-serve: --threads takes 1 to %u, or auto\n", UG_MAX_LOOPS);
                return 2;
            }
            cfg.threads = v;
            break;
        case O_PIN:
            cfg.pin_cpus = 1;
            break;
        case O_QUIET:
            cfg.log = quiet_log;
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (socks.http >= 0) cfg.listen_fd = socks.http; /* systemd's, or a predecessor's */
    g_sd.handoff = socks.shared; /* systemd keeps the socket: its queue is not ours to take */
    int rc = ug_server_create(&g_srv, &cfg);
    if (rc < 0) {
        fprintf(stderr, "ugate-serve: cannot start on %s:%u: %s\n", cfg.host, cfg.port,
                strerror(-rc));
        return 2;
    }
    if ((rc = ug_route(g_srv, "GET", "/", UG_ROUTE_EXACT, hello, NULL)) < 0 ||
        (rc = ug_route(g_srv, "GET", "/sleep", UG_ROUTE_EXACT, sleep_handler, NULL)) < 0 ||
        (rc = ug_route(g_srv, "POST", "/echo", UG_ROUTE_EXACT, echo, NULL)) < 0 ||
        (rc = ug_route(g_srv, "GET", "/healthz", UG_ROUTE_EXACT, healthz, NULL)) < 0 ||
        (rc = ug_route(g_srv, "POST", "/upload", UG_ROUTE_EXACT | UG_ROUTE_STREAM_BODY,
                       upload_handler, NULL)) < 0 ||
        (rc = ug_route_body_limit(g_srv, "POST", "/upload", max_upload)) < 0) {
        fprintf(stderr, "ugate-serve: routes: %s\n", strerror(-rc));
        ug_server_free(g_srv);
        return 2;
    }
    for (uint32_t i = 0; i < middlewares; i++) {
        char name[32];
        snprintf(name, sizeof name, "pass-%u", i + 1);
        if ((rc = ug_use(g_srv, name, pass_on, NULL)) < 0) {
            fprintf(stderr, "ugate-serve: middleware: %s\n", strerror(-rc));
            ug_server_free(g_srv);
            return 2;
        }
    }
    ug_access_log *alog = NULL;
    int alog_fd = -1;
    if (access_log) {
        alog_fd = strcmp(access_log, "-")
                      ? open(access_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)
                      : STDOUT_FILENO;
        if (alog_fd < 0 || (rc = ug_access_log_create(&alog, g_srv, alog_fd)) < 0) {
            fprintf(stderr, "ugate-serve: access log %s: %s\n", access_log,
                    strerror(alog_fd < 0 ? errno : -rc));
            ug_server_free(g_srv);
            return 2;
        }
    }
    /* The admin server last: once its thread runs, it reads g_srv, which stays until then. */
    pthread_t admin_thr;
    if (admin) {
        ug_config acfg;
        ug_config_init(&acfg);
        static char ahost[256];
        if (split_host_port(admin, ahost, sizeof ahost, &acfg.port)) {
            fprintf(stderr, "ugate-serve: --admin takes HOST:PORT, got '%s'\n", admin);
            ug_access_log_free(alog);
            ug_server_free(g_srv);
            return 2;
        }
        acfg.host = ahost;
        acfg.listen_fd = socks.admin; /* inherited from the predecessor, or -1: bound here */
        acfg.threads = 1;
        acfg.backend = cfg.backend;
        acfg.max_conns = 64;
        acfg.log = quiet_log;
        if ((rc = ug_server_create(&g_admin, &acfg)) < 0 ||
            (rc = ug_route(g_admin, "GET", "/metrics", UG_ROUTE_EXACT, metrics, NULL)) < 0 ||
            (rc = ug_route(g_admin, "GET", "/debug/conns", UG_ROUTE_EXACT, debug_conns, NULL)) <
                0 ||
            (rc = pthread_create(&admin_thr, NULL, admin_thread, NULL) ? -EAGAIN : 0) < 0) {
            fprintf(stderr, "ugate-serve: admin listener on %s: %s\n", admin, strerror(-rc));
            ug_server_free(g_admin);
            ug_access_log_free(alog);
            ug_server_free(g_srv);
            return 2;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_sigusr2;
    sigaction(SIGUSR2, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    lc_opts lo = {.pid_file = pid_file,
                  .upgrade_timeout_ms = upgrade_timeout_ms,
                  .drain_timeout_ms = g_sd.drain_timeout_ms ? g_sd.drain_timeout_ms : 30000,
                  .argv = argv,
                  .admin = g_admin,
                  .stop = &g_sd};
    if ((rc = lc_start(g_srv, &lo)) < 0) {
        fprintf(stderr, "ugate-serve: cannot start the supervisor: %s\n", strerror(-rc));
        return 2;
    }
    printf("ugate-serve listening on http://%s%s%s:%u/ (backend %s, %u loop%s)\n",
           strchr(cfg.host, ':') ? "[" : "", cfg.host, strchr(cfg.host, ':') ? "]" : "",
           ug_server_port(g_srv), ug_server_backend(g_srv), ug_server_loops(g_srv),
           ug_server_loops(g_srv) == 1 ? "" : "s");
    if (g_admin)
        printf("ugate-serve admin: GET /metrics and /debug/conns on port %u\n",
               ug_server_port(g_admin));
    fflush(stdout);
    ug_report rep;
    rc = ug_server_run(g_srv, &rep);
    if (lc_finish()) fprintf(stderr, "ugate-serve: the successor serves on; this process exits\n");
    if (alog) { /* the rest of its lines, before anything is freed */
        uint64_t dropped = ug_access_log_dropped(alog);
        int lrc = ug_access_log_free(alog);
        if (lrc || dropped)
            fprintf(stderr, "ugate-serve: access log: %s, %llu line(s) dropped\n",
                    lrc ? strerror(-lrc) : "written", (unsigned long long)dropped);
        if (alog_fd != STDOUT_FILENO) close(alog_fd);
    }
    ug_stats st;
    ug_server_stats(g_srv, &st);
    fprintf(stderr,
            "ugate-serve: stopped: drained %llu conn(s) / %llu request(s), forced %llu conn(s) / "
            "%llu request(s), accepted at close %llu, after close %llu, drain %.1f ms; "
            "served %llu request(s) in total\n",
            (unsigned long long)rep.conns_drained, (unsigned long long)rep.requests_drained,
            (unsigned long long)rep.conns_forced, (unsigned long long)rep.requests_forced,
            (unsigned long long)rep.accepted_at_close, (unsigned long long)rep.accepted_after_close,
            rep.drain_us / 1000.0, (unsigned long long)st.requests);
    if (ug_server_loops(g_srv) > 1) { /* how the loops shared the work (tools/bench reads it) */
        fprintf(stderr, "ugate-serve: requests per loop:");
        for (unsigned i = 0; i < ug_server_loops(g_srv); i++) {
            ug_stats ls;
            ug_server_loop_stats(g_srv, i, &ls);
            fprintf(stderr, " %llu", (unsigned long long)ls.requests);
        }
        fprintf(stderr, "\n");
    }
    if (g_admin) { /* the drain is over: the admin listener goes last */
        /* its socket too is the successor's, or systemd's */
        ug_shutdown_opts aso = {.drain_timeout_ms = 1000, .handoff = lc_upgraded() || socks.shared};
        ug_server_shutdown(g_admin, &aso);
        pthread_join(admin_thr, NULL);
        ug_server_free(g_admin);
    }
    ug_server_free(g_srv);
    if (rc < 0) {
        fprintf(stderr, "ugate-serve: loop failed: %s\n", strerror(-rc));
        return 2;
    }
    return rc == 0 ? 0 : 1;
}
