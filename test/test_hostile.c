/* A hostile client, end to end over loopback, on both backends (`test_hostile`,
 * `test_hostile epoll`): clients that pipeline and never read (the output bound: what the
 * server holds for them, and a normal client served meanwhile), a client that reads slowly
 * (pauses and resumes lose and reorder nothing), the request-smuggling shapes and the Host
 * rules on the wire (one 400, then the close; nothing after it is answered). */
#include "core.h"
#include "testserver.h"
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
#include <sys/socket.h>
#include <unistd.h>

static const char GET_ROOT[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";

static void close_fd(int fd) {
    if (fd < 0) return;
    tu_forget(fd);
    close(fd);
}

/* What the server holds for its connections: the capacity of every buffer of every
 * connection's context (input, parked input, both output buffers, response headers). Read
 * on the loop thread. */
typedef struct held {
    uint64_t bytes, max_conn;
    uint32_t conns;
} held;

typedef struct held_on {
    unsigned loop;
    held h;
} held_on;

/* On the loop's own thread: its connections only. */
static void held_fn(ug_server *srv, void *user) {
    held_on *ho = user;
    held *h = &ho->h;
    memset(h, 0, sizeof *h);
    const ug__loop *lp = srv->loops[ho->loop];
    for (uint32_t i = 0; i < lp->slots_used; i++) {
        const ug__conn *c = &lp->slots[i];
        if (c->state == UG_CONN_FREE) continue;
        h->conns++;
        const struct ug_request *x = c->ctx;
        if (!x) continue;
        uint64_t b =
            (uint64_t)x->in.cap + x->parked.cap + x->out[0].cap + x->out[1].cap + x->resp_hdrs.cap;
        h->bytes += b;
        if (b > h->max_conn) h->max_conn = b;
    }
}

static int held_now(srv_ctx *sc, held *h) {
    memset(h, 0, sizeof *h);
    for (unsigned l = 0; l < ug_server_loops(sc->srv); l++) {
        held_on ho = {l, {0, 0, 0}};
        int rc = ts_on_loop_n(sc, l, held_fn, &ho);
        if (rc) return rc;
        h->bytes += ho.h.bytes;
        h->conns += ho.h.conns;
        if (ho.h.max_conn > h->max_conn) h->max_conn = ho.h.max_conn;
    }
    return 0;
}

/* Send as much as the connection takes without blocking; the bytes sent. */
static size_t flood(int fd, const char *buf, size_t len) {
    size_t total = 0;
    for (;;) {
        ssize_t n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0) return total;
        total += (size_t)n;
    }
}

/* ------------------------------------------------------------------ the output bound */

enum { FLOODERS = 8, MAX_OUT = 64 * 1024 };

static void test_unread_pipeline_bounded(void) {
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.max_output_bytes = MAX_OUT;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    static char batch[1000 * (sizeof GET_ROOT - 1)];
    for (size_t i = 0; i < 1000; i++)
        memcpy(batch + i * (sizeof GET_ROOT - 1), GET_ROOT, sizeof GET_ROOT - 1);
    int fds[FLOODERS];
    for (int i = 0; i < FLOODERS; i++) {
        fds[i] = tu_connect(sc.port);
        CU_ASSERT_FATAL(fds[i] >= 0);
        int small = 16 * 1024; /* the client's own buffer: not what is measured */
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    /* Flood until the kernel takes no more for 300 ms (everything the server would read is
     * read), at most 3 s; a normal client is answered all along. */
    uint64_t t0 = tu_now_ms(), last_progress = t0;
    size_t sent = 0;
    int normal_ok = 0, normal_tries = 0;
    while (tu_now_ms() - t0 < 3000 && tu_now_ms() - last_progress < 300) {
        size_t round = 0;
        for (int i = 0; i < FLOODERS; i++) round += flood(fds[i], batch, sizeof batch);
        if (round) last_progress = tu_now_ms();
        sent += round;
        if (normal_tries < 10) {
            int fd = tu_connect(sc.port);
            char body[64];
            normal_tries++;
            if (fd >= 0 && tu_send_all(fd, GET_ROOT, sizeof GET_ROOT - 1) == 0 &&
                tu_read_response(fd, body, sizeof body, NULL) == 200)
                normal_ok++;
            close_fd(fd);
        }
        usleep(10000);
    }
    CU_ASSERT_EQUAL(normal_ok, normal_tries);
    held h;
    CU_ASSERT_EQUAL_FATAL(held_now(&sc, &h), 0);
    ug_stats st;
    CU_ASSERT_EQUAL(ts_stats_now(&sc, &st), 0);
    /* Per connection: two output buffers of at most twice (max_output_bytes + one
     * response) each (they grow by doubling), plus the input that had arrived when reading
     * paused; far below what the clients sent. */
    uint64_t per_conn = 4 * (MAX_OUT + 4096) + 1024 * 1024;
    if (h.max_conn > per_conn || st.output_pauses < FLOODERS)
        fprintf(stderr, "\n    sent %zu bytes, held %llu in %u conns (max %llu), pauses %llu\n",
                sent, (unsigned long long)h.bytes, h.conns, (unsigned long long)h.max_conn,
                (unsigned long long)st.output_pauses);
    CU_ASSERT(sent > 8 * per_conn); /* the clients did push far more than is held */
    CU_ASSERT(h.max_conn <= per_conn);
    CU_ASSERT(h.bytes <= FLOODERS * per_conn);
    CU_ASSERT(st.output_pauses >= FLOODERS);
    for (int i = 0; i < FLOODERS; i++) close_fd(fds[i]);
    ts_stop(&sc);
}

/* A client that pipelines far past the bound, then reads: every response arrives, in order
 * (reading paused and resumed several times meanwhile). A thread sends while the test reads,
 * late and slowly. */
/* Echoed 2 KiB bodies: more than the kernel's socket buffers hold, so output backs up in the
 * server and reading must pause. */
enum { SLOW_N = 5000, SLOW_BODY = 2048 };

struct sender {
    int fd;
    const char *buf;
    size_t len;
    int rc;
};

static void *send_thread(void *arg) {
    struct sender *s = arg;
    s->rc = tu_send_all(s->fd, s->buf, s->len);
    return NULL;
}

static void test_slow_reader_in_order(void) {
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.max_output_bytes = 16 * 1024;
    srv_ctx sc;
    ts_start(&sc, &cfg);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CU_ASSERT_FATAL(fd >= 0);
    int small = 4096; /* before connect: a small window, so the server's output backs up */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(sc.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    static char reqs[SLOW_N * (SLOW_BODY + 96)];
    size_t n = 0;
    for (int i = 0; i < SLOW_N; i++) {
        n += (size_t)snprintf(reqs + n, sizeof reqs - n,
                              "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%-*d",
                              SLOW_BODY, SLOW_BODY, i);
    }
    struct sender snd = {fd, reqs, n, -1};
    pthread_t thr;
    CU_ASSERT_FATAL(pthread_create(&thr, NULL, send_thread, &snd) == 0);
    usleep(200000); /* let the output back up and the server pause reading */
    int next = 0;
    static char body[SLOW_BODY + 1];
    for (; next < SLOW_N; next++) {
        if (tu_read_response(fd, body, sizeof body, NULL) != 200 || atoi(body) != next) break;
        if (next % 1000 == 0) usleep(20000); /* and read slowly */
    }
    pthread_join(thr, NULL);
    CU_ASSERT_EQUAL(snd.rc, 0);
    CU_ASSERT_EQUAL(next, SLOW_N);
    ug_stats st;
    CU_ASSERT_EQUAL(ts_stats_now(&sc, &st), 0);
    CU_ASSERT(st.output_pauses >= 1);
    close_fd(fd);
    ts_stop(&sc);
}

/* ------------------------------------------------------------------ smuggling, Host */

/* Send raw on a fresh connection; read everything until EOF (5 s at most). Returns the
 * number of responses, the first one's status in *status. */
static int exchange_all(uint16_t port, const char *raw, size_t len, int *status, char *body,
                        size_t cap) {
    int fd = tu_connect(port);
    if (fd < 0) return -1;
    if (tu_send_all(fd, raw, len) < 0) {
        close_fd(fd);
        return -1;
    }
    shutdown(fd, SHUT_WR);
    int count = 0, st;
    char tmp[256];
    while ((st = tu_read_response(fd, count ? tmp : body, count ? sizeof tmp : cap, NULL)) > 0) {
        if (!count) *status = st;
        count++;
    }
    close_fd(fd);
    return count;
}

#define CHUNKED_POST "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
#define SMUGGLED "GET /path/smuggled HTTP/1.1\r\nHost: t\r\n\r\n"

static void test_smuggling_shapes(void) {
    /* The length comes from the literal: some shapes hold a NUL. */
#define SHAPE(name, raw)                                                                           \
    { name, raw, sizeof(raw) - 1 }
    static const struct {
        const char *name, *raw;
        size_t len;
    } shapes[] = {
        SHAPE("LF inside a chunk extension", CHUNKED_POST "2;\nxx\r\n45\r\n0\r\n\r\n" SMUGGLED),
        SHAPE("NUL inside a chunk extension", CHUNKED_POST "2;a\0b\r\nxx\r\n0\r\n\r\n" SMUGGLED),
        SHAPE("control byte in a chunk extension",
              CHUNKED_POST "2;a=\x01\r\nxx\r\n0\r\n\r\n" SMUGGLED),
        SHAPE("bare LF after a chunk size", CHUNKED_POST "2\nxx\r\n0\r\n\r\n" SMUGGLED),
        SHAPE("bare LF ends the trailers", CHUNKED_POST "2\r\nxx\r\n0\r\nT: v\r\n\n" SMUGGLED),
        SHAPE("bare LF ends the last chunk", CHUNKED_POST "2\r\nxx\r\n0\n\r\n" SMUGGLED),
        SHAPE("obs-fold in a trailer", CHUNKED_POST "0\r\nT: a\r\n b\r\n\r\n" SMUGGLED),
        SHAPE("obs-fold: Transfer-Encoding with an empty first line",
              "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n "
              "chunked\r\n\r\n0\r\n\r\n" SMUGGLED),
        SHAPE("obs-fold: Content-Length with an empty first line",
              "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n 3\r\n\r\nabc" SMUGGLED),
        SHAPE("obs-fold: Host with an empty first line",
              "GET / HTTP/1.1\r\nHost:\r\n evil\r\n\r\n" SMUGGLED),
        SHAPE("bare LF in the head", "GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n" SMUGGLED),
        SHAPE("bare CR in the head", "GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n" SMUGGLED),
        SHAPE("Content-Length with Transfer-Encoding",
              "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: "
              "chunked\r\n\r\n"
              "0\r\n\r\n" SMUGGLED),
        SHAPE("no Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n" SMUGGLED),
        SHAPE("two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" SMUGGLED),
        SHAPE("invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n" SMUGGLED),
        SHAPE("userinfo in the absolute-form",
              "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n" SMUGGLED),
    };
#undef SHAPE
    srv_ctx sc;
    ts_start(&sc, NULL);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        size_t len = shapes[i].len;
        int status = 0;
        char body[256];
        int n = exchange_all(sc.port, shapes[i].raw, len, &status, body, sizeof body);
        if (n != 1 || status != 400)
            fprintf(stderr, "\n    %s: %d response(s), first %d\n", shapes[i].name, n, status);
        CU_ASSERT_EQUAL(n, 1);
        CU_ASSERT_EQUAL(status, 400);
    }
    /* A client that behaves, meanwhile, is served. */
    int fd = tu_connect(sc.port);
    char body[64];
    CU_ASSERT_EQUAL(tu_send_all(fd, GET_ROOT, sizeof GET_ROOT - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
    close_fd(fd);
    ts_stop(&sc);
}

static void test_authority(void) {
    static const struct {
        const char *raw, *want;
    } cases[] = {
        {"GET /authority HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", "example.com:8080"},
        {"GET http://other.example:81/authority HTTP/1.1\r\nHost: a\r\n\r\n", "other.example:81"},
        {"GET /authority HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", "[::1]:80"},
        {"GET /authority HTTP/1.0\r\n\r\n", "(none)"},
        {"GET /authority HTTP/1.1\r\nHost:\r\n\r\n", ""},
    };
    srv_ctx sc;
    ts_start(&sc, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int status = 0;
        char body[256] = "";
        int n =
            exchange_all(sc.port, cases[i].raw, strlen(cases[i].raw), &status, body, sizeof body);
        CU_ASSERT_EQUAL(n, 1);
        CU_ASSERT_EQUAL(status, 200);
        if (strcmp(body, cases[i].want))
            fprintf(stderr, "\n    authority %s, want %s\n", body, cases[i].want);
        CU_ASSERT_STRING_EQUAL(body, cases[i].want);
    }
    ts_stop(&sc);
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("hostile", NULL, NULL);
    CU_add_test(s, "8 clients pipeline and never read: bounded, others served",
                test_unread_pipeline_bounded);
    CU_add_test(s, "a slow reader gets every response, in order", test_slow_reader_in_order);
    CU_add_test(s, "smuggling shapes and Host rules: one 400, nothing after it",
                test_smuggling_shapes);
    CU_add_test(s, "the effective authority", test_authority);
}

int main(int argc, char **argv) {
    ts_init(argc, argv);
    return tu_main(register_suites, 240);
}
