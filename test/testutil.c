#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "test watchdog expired: a test hung\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to do */
    }
    _exit(2);
}

int tu_main(void (*register_suites)(void), unsigned watchdog_s) {
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(watchdog_s);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    register_suites();
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    if (failed) return 1;
    return run ? 0 : 77;
}

int tu_uring_available(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0) return 0;
    close(fd);
    return 1;
}

void tu_require_uring(void) {
    if (!tu_uring_available()) {
        fprintf(stderr, "SKIP: io_uring is refused by this kernel (%s)\n", strerror(errno));
        exit(77);
    }
}

uint64_t tu_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int tu_connect(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
    /* EINTR: the kernel tears down an io_uring this thread used (another server, freed),
     * and every such thread gets a task-work notification that interrupts a socket call
     * with a timeout. The connect goes on in the background: wait for its outcome. */
    if (errno == EINTR) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof err;
        int r;
        while ((r = poll(&p, 1, 5000)) < 0 && errno == EINTR) {
        }
        if (r == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0) return fd;
        errno = r == 1 ? err : ETIMEDOUT;
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

ssize_t tu_recv(int fd, void *buf, size_t len, int flags) {
    ssize_t n;
    while ((n = recv(fd, buf, len, flags)) < 0 && errno == EINTR) {
    }
    return n;
}

int tu_send_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Per-fd carry of bytes read beyond a response (pipelining). Small fixed table: tests use
 * few descriptors at once through this API. */
#define CARRY_SLOTS 2048
#define CARRY_CAP (1 << 20)
static struct carry {
    int fd;
    size_t len;
    char *buf;
} carries[CARRY_SLOTS];

static pthread_mutex_t carry_lock = PTHREAD_MUTEX_INITIALIZER;

static struct carry *carry_for_locked(int fd) {
    struct carry *fre = NULL;
    for (int i = 0; i < CARRY_SLOTS; i++) {
        if (carries[i].buf && carries[i].fd == fd) return &carries[i];
        if (!carries[i].buf && !fre) fre = &carries[i];
    }
    if (!fre) return NULL;
    fre->buf = malloc(CARRY_CAP); /* untouched pages cost nothing */
    if (!fre->buf) return NULL;
    fre->fd = fd;
    fre->len = 0;
    return fre;
}

/* Threads may read responses concurrently (each on its own fds): the table is locked, the
 * carry itself belongs to the fd's owner. */
static struct carry *carry_for(int fd) {
    pthread_mutex_lock(&carry_lock);
    struct carry *c = carry_for_locked(fd);
    pthread_mutex_unlock(&carry_lock);
    return c;
}

void tu_forget(int fd) {
    pthread_mutex_lock(&carry_lock);
    for (int i = 0; i < CARRY_SLOTS; i++)
        if (carries[i].buf && carries[i].fd == fd) {
            free(carries[i].buf);
            carries[i].buf = NULL;
        }
    pthread_mutex_unlock(&carry_lock);
}

/* Make sure c holds at least need bytes; 0 on success, -1 on EOF/error/timeout. */
static int fill(int fd, struct carry *c, size_t need) {
    while (c->len < need) {
        if (c->len == CARRY_CAP) return -1;
        ssize_t n = recv(fd, c->buf + c->len, CARRY_CAP - c->len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        c->len += (size_t)n;
    }
    return 0;
}

static void consume(struct carry *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static char *find_crlf(struct carry *c, size_t from) {
    for (size_t i = from; i + 1 < c->len; i++)
        if (c->buf[i] == '\r' && c->buf[i + 1] == '\n') return c->buf + i;
    return NULL;
}

int tu_read_response(int fd, char *body, size_t cap, const char **hdrs) {
    static _Thread_local char hdrbuf[16384]; /* the client threads of a test call at once */
    struct carry *c = carry_for(fd);
    if (!c) return -1;
    size_t hend = 0;
    for (;;) { /* find "\r\n\r\n" */
        for (size_t i = 3; i < c->len; i++)
            if (c->buf[i - 3] == '\r' && c->buf[i - 2] == '\n' && c->buf[i - 1] == '\r' &&
                c->buf[i] == '\n') {
                hend = i + 1;
                break;
            }
        if (hend) break;
        if (fill(fd, c, c->len + 1) < 0) return -1;
    }
    int status = 0;
    if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1) return -1;
    size_t hl = hend < sizeof hdrbuf ? hend : sizeof hdrbuf - 1;
    memcpy(hdrbuf, c->buf, hl);
    hdrbuf[hl] = 0;
    if (hdrs) *hdrs = hdrbuf;
    consume(c, hend);
    long clen = -1;
    int chunked = 0;
    for (char *p = hdrbuf; (p = strchr(p, '\n')) != NULL;) {
        p++;
        if (!strncasecmp(p, "content-length:", 15)) clen = strtol(p + 15, NULL, 10);
        if (!strncasecmp(p, "transfer-encoding:", 18) && strstr(p, "chunked")) chunked = 1;
    }
    size_t out = 0;
    int nobody = (status >= 100 && status < 200) || status == 204 || status == 304;
    if (nobody) clen = 0;
    if (chunked && !nobody) {
        for (;;) {
            char *e;
            while (!(e = find_crlf(c, 0)))
                if (fill(fd, c, c->len + 1) < 0) return -1;
            size_t sz = strtoul(c->buf, NULL, 16);
            consume(c, (size_t)(e - c->buf) + 2);
            if (fill(fd, c, sz + 2) < 0) return -1;
            if (body)
                for (size_t i = 0; i < sz && out + 1 < cap; i++) body[out++] = c->buf[i];
            consume(c, sz + 2);
            if (sz == 0) break;
        }
    } else if (clen >= 0) {
        if (fill(fd, c, (size_t)clen) < 0) return -1;
        if (body)
            for (long i = 0; i < clen && out + 1 < cap; i++) body[out++] = c->buf[i];
        consume(c, (size_t)clen);
    } else { /* read until EOF */
        for (;;) {
            ssize_t n = (c->len < CARRY_CAP) ? recv(fd, c->buf + c->len, CARRY_CAP - c->len, 0) : 0;
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            c->len += (size_t)n;
        }
        if (body)
            for (size_t i = 0; i < c->len && out + 1 < cap; i++) body[out++] = c->buf[i];
        consume(c, c->len);
    }
    if (body && cap) body[out] = 0;
    return status;
}

int tu_wait_eof(int fd, int ms) {
    uint64_t end = tu_now_ms() + (uint64_t)ms;
    char b[4096];
    for (;;) {
        uint64_t now = tu_now_ms();
        if (now >= end) return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(end - now));
        if (r <= 0) continue;
        ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (n == 0) return 1;
        if (n < 0 && errno != EAGAIN && errno != EINTR) return 1; /* reset counts as closed */
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

void tu_srand(uint64_t seed) {
    rng_state = seed ? seed : 0x9e3779b97f4a7c15ull; /* xorshift has no way out of 0 */
}

uint64_t tu_rand(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
