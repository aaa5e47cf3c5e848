/* The access log: one Combined Log Format line per request, from the completion hook.
 *
 * Each loop formats its lines into a buffer of its own. A full buffer is handed to the log's
 * writer thread in exchange for the spare one, without a lock: one pointer each way, each
 * with one writer at a time (see log_loop), and an eventfd write to wake the writer (one
 * per 64 KiB of lines). If the writer still has the spare, the line is dropped and counted,
 * so a slow or blocked fd never blocks a loop and memory stays two buffers a loop. Once a
 * second the writer posts to each loop a request to hand over what it has, so a quiet
 * loop's lines are written within about a second too. Peer addresses are kept per
 * connection slot from the connection-state hook (one getpeername(2) per connection).
 */
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LOG_BUF_SIZE (64u * 1024)
/* Fields longer than these are cut, and end in "...". An escaped byte takes 4. */
#define TARGET_LOGGED_MAX 2048u
#define HEADER_LOGGED_MAX 512u
#define ESCAPED_MAX(n) (4u * (n) + sizeof("...") - 1)
#define DATE_LEN (sizeof("01/Dec/2026:16:50:00 +0000") - 1)
/* The longest line: peer, date, method, target, referer, user agent (each escaped at worst),
 * and the fixed parts with the numbers (status, a 20-digit byte count, a duration); so no
 * line is ever cut short of its closing quote and newline. */
#define LINE_FIXED_MAX 128u
#define LINE_MAX_BYTES                                                                             \
    (INET6_ADDRSTRLEN + DATE_LEN + ESCAPED_MAX(TARGET_LOGGED_MAX) +                                \
     3 * ESCAPED_MAX(HEADER_LOGGED_MAX) + ESCAPED_MAX(UG_REQUEST_ID_MAX) + LINE_FIXED_MAX)
_Static_assert(LINE_MAX_BYTES <= LOG_BUF_SIZE, "a line fits in a loop's buffer");
#define FLUSH_INTERVAL_MS 1000

typedef char peer_str[INET6_ADDRSTRLEN];

typedef struct log_loop {
    struct ug_access_log *log;
    /* the loop's */
    char *cur;
    size_t len;
    int64_t date_sec;
    char date[DATE_LEN + 1 + 32]; /* + room for fields the compiler cannot bound */
    peer_str *peers;              /* by connection slot */
    uint64_t dropped;             /* relaxed stores (the loop's), loads (any thread) */
    /* The hand-over. The loop publishes pending (release) only after taking the spare, and
     * the writer gives a buffer back as the spare (release) only after clearing pending:
     * so pending is NULL whenever the loop stores it, and the spare NULL whenever the writer
     * does. */
    _Atomic(char *) spare;   /* the writer's gift: the loop takes it (stores NULL) */
    _Atomic(char *) pending; /* the loop's: the writer writes it out, then stores NULL */
    size_t pending_len;      /* stored before pending is */
} log_loop;

struct ug_access_log {
    ug_server *srv;
    int fd;
    uint32_t nloops, nslots;
    pthread_t writer;
    int efd; /* wakes the writer */
    _Atomic int stop;
    int err;       /* the writer's: the first write error, -errno */
    int torn;      /* the writer's: the last write ended inside a line */
    uint64_t lost; /* the writer's: lines of buffers whose write failed (relaxed stores) */
    log_loop *loops;
};

/* ---------------------------------------------------------------- the loops' side ---- */

static void wake_writer(ug_access_log *log) {
    uint64_t one = 1;
    /* EAGAIN (the counter is full) means it is awake already */
    (void)!write(log->efd, &one, sizeof one);
}

/* Hand the current buffer to the writer if it has given the spare back. */
static int hand_over(ug_access_log *log, log_loop *ll) {
    char *spare = atomic_load_explicit(&ll->spare, memory_order_acquire);
    if (!spare) return 0;
    atomic_store_explicit(&ll->spare, NULL, memory_order_relaxed);
    ll->pending_len = ll->len;
    atomic_store_explicit(&ll->pending, ll->cur, memory_order_release);
    ll->cur = spare;
    ll->len = 0;
    wake_writer(log);
    return 1;
}

static void append(ug_access_log *log, log_loop *ll, const char *line, size_t n) {
    if (ll->len + n > LOG_BUF_SIZE && !hand_over(log, ll)) {
        UG_GAUGE_ADD(ll->dropped, 1u); /* only this loop writes it */
        return;
    }
    memcpy(ll->cur + ll->len, line, n);
    ll->len += n;
}

/* Quotes, backslashes and bytes that are not printable ASCII are written as \xHH (as nginx
 * does), so a field can neither end its quotes early nor forge a line. */
static size_t put_escaped(char *dst, size_t room, const char *s, size_t n, size_t max) {
    size_t w = 0;
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\' || ch < 0x20 || ch >= 0x7f) {
            static const char hex[] = "0123456789ABCDEF";
            if (w + 4 > room) break;
            dst[w++] = '\\'; /* written by hand: no terminating NUL past the room */
            dst[w++] = 'x';
            dst[w++] = hex[ch >> 4];
            dst[w++] = hex[ch & 15];
        } else {
            if (w + 1 > room) break;
            dst[w++] = (char)ch;
        }
    }
    if (n > max && w + 3 <= room) {
        memcpy(dst + w, "...", 3);
        w += 3;
    }
    return w;
}

typedef struct line {
    char p[LINE_MAX_BYTES];
    size_t len;
} line;

static void lit(line *l, const char *s) {
    size_t n = strlen(s);
    if (n > sizeof l->p - l->len) n = sizeof l->p - l->len;
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void fmt(line *l, const char *f, ...) __attribute__((format(printf, 2, 3)));
static void fmt(line *l, const char *f, ...) {
    size_t room = sizeof l->p - l->len;
    if (room < 2) return; /* full: the rest of the line is cut */
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(l->p + l->len, room, f, ap);
    va_end(ap);
    if (n > 0) l->len += (size_t)n < room ? (size_t)n : room - 1; /* vsnprintf wrote room - 1 */
}

static void field(line *l, ug_str v, size_t max) {
    if (!v.ptr || !v.len) {
        lit(l, "-");
        return;
    }
    l->len += put_escaped(l->p + l->len, sizeof l->p - l->len, v.ptr, v.len, max);
}

static void refresh_date(log_loop *ll) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec == ll->date_sec) return;
    static const char months[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    ug__gmtime(ts.tv_sec, &tm); /* gmtime_r would take glibc's time zone lock */
    /* The month by hand: strftime's %b follows the locale, the log format does not. */
    snprintf(ll->date, sizeof ll->date, "%02d/%s/%04d:%02d:%02d:%02d +0000", tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    ll->date_sec = ts.tv_sec;
}

static void on_complete(const ug_request *req, const ug_completion *info, void *user) {
    ug_access_log *log = user;
    log_loop *ll = &log->loops[info->loop];
    refresh_date(ll);
    line l;
    l.len = 0;
    const char *peer =
        info->slot < log->nslots && ll->peers[info->slot][0] ? ll->peers[info->slot] : "-";
    fmt(&l, "%s - - [%s] \"", peer, ll->date);
    ug_str m = ug_req_method(req);
    if (m.len) {
        field(&l, m, HEADER_LOGGED_MAX);
        lit(&l, " ");
        field(&l, ug_req_target(req), TARGET_LOGGED_MAX);
        fmt(&l, " HTTP/1.%d\" ", ug_req_http_minor(req));
    } else {
        lit(&l, "-\" "); /* refused before its method was read */
    }
    if (info->status)
        fmt(&l, "%d %llu \"", info->status, (unsigned long long)info->bytes_out);
    else
        lit(&l, "- 0 \"");
    field(&l, m.len ? ug_req_header(req, "Referer") : (ug_str){NULL, 0}, HEADER_LOGGED_MAX);
    lit(&l, "\" \"");
    field(&l, m.len ? ug_req_header(req, "User-Agent") : (ug_str){NULL, 0}, HEADER_LOGGED_MAX);
    /* integers: %f would follow LC_NUMERIC (a decimal comma) */
    fmt(&l, "\" %llu.%03llu ", (unsigned long long)(info->duration_ns / 1000000000u),
        (unsigned long long)(info->duration_ns % 1000000000u / 1000000u));
    field(&l, ug_req_request_id(req), UG_REQUEST_ID_MAX); /* "-" when request ids are off */
    if (l.len > sizeof l.p - 1) l.len = sizeof l.p - 1;
    l.p[l.len++] = '\n';
    append(log, ll, l.p, l.len);
}

static void on_conn(ug_server *srv, const ug_conn_info *info, void *user) {
    (void)srv;
    ug_access_log *log = user;
    if (info->state != UG_CS_NEW || info->slot >= log->nslots) return;
    char *dst = log->loops[info->loop].peers[info->slot];
    dst[0] = '\0';
    if (!info->peer) return;
    const struct sockaddr *sa = info->peer;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)info->peer)->sin_addr, dst,
                  sizeof(peer_str));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)info->peer)->sin6_addr, dst,
                  sizeof(peer_str));
}

/* Posted once a second by the writer: a quiet loop's lines go out too. */
static void tick(ug_server *srv, void *user) {
    (void)srv;
    log_loop *ll = user;
    if (ll->len) hand_over(ll->log, ll);
}

/* ---------------------------------------------------------------- the writer ---- */

/* 0, or -errno with *done the bytes written before the error. */
static int write_all(int fd, const char *p, size_t n, size_t *done) {
    *done = 0;
    while (*done < n) {
        ssize_t w = write(fd, p + *done, n - *done);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        *done += (size_t)w;
    }
    return 0;
}

static uint64_t count_lines(const char *p, size_t n) {
    uint64_t k = 0;
    for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))); p++) k++;
    return k;
}

/* Write one buffer; if that fails, the lines not written whole are counted as lost, and the
 * next buffer is tried (EAGAIN on a non-blocking fd passes). A line cut by the failure is
 * ended before the next write, so it cannot run into the next line. */
static void write_out(ug_access_log *log, const char *p, size_t n) {
    size_t done = 0;
    if (log->torn && write_all(log->fd, "\n", 1, &done) == 0) log->torn = 0;
    if (log->torn) { /* still cut: this whole buffer would run into it */
        UG_GAUGE_ADD(log->lost, count_lines(p, n));
        return;
    }
    int rc = write_all(log->fd, p, n, &done);
    if (!rc) return;
    if (!log->err) log->err = rc;
    const char *cut = p + done;
    while (cut > p && cut[-1] != '\n') cut--; /* the start of the line the error cut */
    UG_GAUGE_ADD(log->lost, count_lines(cut, n - (size_t)(cut - p)));
    log->torn = done > 0 && p[done - 1] != '\n';
}

/* Write what the loops handed over, and give their buffers back. */
static void write_pending(ug_access_log *log) {
    for (uint32_t i = 0; i < log->nloops; i++) {
        log_loop *ll = &log->loops[i];
        char *p = atomic_load_explicit(&ll->pending, memory_order_acquire);
        if (!p) continue;
        write_out(log, p, ll->pending_len);
        atomic_store_explicit(&ll->pending, NULL, memory_order_relaxed);
        atomic_store_explicit(&ll->spare, p, memory_order_release);
    }
}

static void *writer_main(void *arg) {
    ug_access_log *log = arg;
    struct pollfd pfd = {.fd = log->efd, .events = POLLIN};
    uint64_t next_tick = ug__clock_ns() / 1000000u + FLUSH_INTERVAL_MS;
    for (;;) {
        int stop = atomic_load_explicit(&log->stop, memory_order_acquire);
        write_pending(log);
        if (stop) break;
        uint64_t now = ug__clock_ns() / 1000000u;
        if (now >= next_tick) {
            /* Fails once the run has returned (the loops take no posts): nothing to ask. */
            for (uint32_t i = 0; i < log->nloops; i++) /* not to a loop yet to run: they pile */
                if (atomic_load_explicit(&log->srv->loops[i]->started, memory_order_acquire))
                    (void)ug_server_post_loop(log->srv, i, tick, &log->loops[i]);
            next_tick = now + FLUSH_INTERVAL_MS;
            continue;
        }
        if (poll(&pfd, 1, (int)(next_tick - now)) > 0) {
            uint64_t v;
            (void)!read(log->efd, &v, sizeof v);
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- create / free ---- */

/* With the writer stopped (or never started): every buffer is cur or the spare. */
static void destroy(ug_access_log *log) {
    for (uint32_t i = 0; log->loops && i < log->nloops; i++) {
        log_loop *ll = &log->loops[i];
        assert(!atomic_load(&ll->pending));
        free(ll->cur);
        free(atomic_load(&ll->spare));
        free(ll->peers);
    }
    free(log->loops);
    if (log->efd >= 0) close(log->efd);
    free(log);
}

int ug_access_log_create(ug_access_log **out, ug_server *srv, int fd) {
    if (!out || !srv || fd < 0) return -EINVAL;
    *out = NULL;
    if (srv->running) return -EBUSY;
    ug_access_log *log = ug__calloc(1, sizeof *log);
    if (!log) return -ENOMEM;
    log->srv = srv;
    log->fd = fd;
    log->nloops = srv->nloops;
    log->nslots = ug_server_conn_slots(srv);
    log->efd = -1;
    atomic_init(&log->stop, 0);
    int rc = -ENOMEM;
    log->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (log->efd < 0) {
        rc = -errno;
        goto fail;
    }
    log->loops = ug__calloc(log->nloops, sizeof *log->loops);
    if (!log->loops) goto fail;
    for (uint32_t i = 0; i < log->nloops; i++) {
        log_loop *ll = &log->loops[i];
        ll->log = log;
        ll->cur = ug__malloc(LOG_BUF_SIZE);
        atomic_init(&ll->spare, ug__malloc(LOG_BUF_SIZE));
        atomic_init(&ll->pending, NULL);
        ll->peers = ug__calloc(log->nslots, sizeof *ll->peers); /* touched as slots are used */
        ll->date_sec = -1;
        if (!ll->cur || !atomic_load(&ll->spare) || !ll->peers) goto fail;
    }
    if ((rc = ug_server_on_conn_state(srv, on_conn, log)) != 0) goto fail;
    if ((rc = ug_server_on_complete(srv, on_complete, log)) != 0) goto fail_hooked;
    if ((rc = -pthread_create(&log->writer, NULL, writer_main, log)) != 0) goto fail_hooked;
    *out = log;
    return 0;
fail_hooked:
    ug__server_unhook(srv, log);
fail:
    destroy(log);
    return rc;
}

uint64_t ug_access_log_dropped(const ug_access_log *log) {
    uint64_t n = UG_GAUGE_GET(log->lost);
    for (uint32_t i = 0; i < log->nloops; i++) n += UG_GAUGE_GET(log->loops[i].dropped);
    return n;
}

int ug_access_log_free(ug_access_log *log) {
    if (!log) return 0;
    atomic_store_explicit(&log->stop, 1, memory_order_release);
    wake_writer(log);
    pthread_join(log->writer, NULL);
    /* The run has returned: the loops' own buffers are nobody else's now. */
    for (uint32_t i = 0; i < log->nloops; i++) {
        log_loop *ll = &log->loops[i];
        if (ll->len) write_out(log, ll->cur, ll->len);
    }
    int rc = log->err;
    ug__server_unhook(log->srv, log);
    destroy(log);
    return rc;
}
