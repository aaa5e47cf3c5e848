/* Restarts without refusing anyone, in one process: a socket inherited with a predecessor's
 * stale SYN filter is served; two servers share one listening socket and the first closes
 * its gate by hand-off while clients keep connecting: nothing refused, nothing lost, the
 * other server takes every connection after it (the queue was left to it); the listener
 * exported for a successor. */
#include "testserver.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int ug__sock_drop_syn(int lfd); /* the library's own filter (sock.c), as a predecessor left it */

static const char GET_CLOSE[] = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

static int listen_loopback(uint16_t *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CU_ASSERT_FATAL(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof a;
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CU_ASSERT_FATAL(listen(fd, 1024) == 0);
    CU_ASSERT_FATAL(getsockname(fd, (struct sockaddr *)&a, &sl) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Does a connect complete within ms? (A dropped SYN leaves it pending.) */
static int connects_within(uint16_t port, int ms) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    int ok = rc == 0;
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof err;
        ok = poll(&p, 1, ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && !err;
    }
    close(fd);
    return ok;
}

static void test_stale_filter(void) {
    uint16_t port;
    int lfd = listen_loopback(&port);
    CU_ASSERT_EQUAL_FATAL(ug__sock_drop_syn(lfd), 0);
    CU_ASSERT_FALSE(connects_within(port, 200)); /* as the predecessor left it: nobody gets in */
    srv_ctx sc;
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.listen_fd = lfd;
    ts_start(&sc, &cfg);
    CU_ASSERT_EQUAL(sc.port, port);
    int fd = tu_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    char body[64];
    CU_ASSERT_EQUAL(tu_send_all(fd, GET_CLOSE, sizeof GET_CLOSE - 1), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), 200);
    tu_forget(fd);
    close(fd);
    ts_stop(&sc);
}

/* Connection-per-request clients: every attempt must get its 200. */
typedef struct load {
    uint16_t port;
    int stop;
    unsigned ok, failed;
} load;

static void *cpr_load(void *arg) {
    load *l = arg;
    uint64_t t0 = tu_now_ms();
    for (int i = 0;
         i < 100000 && !__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE) && tu_now_ms() - t0 < 20000;
         i++) {
        int fd = tu_connect(l->port);
        char body[64];
        int st = fd >= 0 && tu_send_all(fd, GET_CLOSE, sizeof GET_CLOSE - 1) == 0
                     ? tu_read_response(fd, body, sizeof body, NULL)
                     : -1;
        if (fd >= 0) {
            tu_forget(fd);
            close(fd);
        }
        if (st == 200)
            __atomic_add_fetch(&l->ok, 1, __ATOMIC_RELAXED);
        else
            __atomic_add_fetch(&l->failed, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void test_handoff_shared_socket(void) {
    uint16_t port;
    int lfd = listen_loopback(&port);
    int fd_b = fcntl(lfd, F_DUPFD_CLOEXEC, 3);
    CU_ASSERT_FATAL(fd_b >= 0);
    srv_ctx a, b;
    ug_config ca, cb;
    ug_config_init(&ca);
    ug_config_init(&cb);
    ca.listen_fd = lfd;
    cb.listen_fd = fd_b;
    ts_start(&a, &ca);
    ts_start(&b, &cb);
    enum { NCL = 4 };
    load l = {.port = port};
    pthread_t thr[NCL];
    for (int i = 0; i < NCL; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&thr[i], NULL, cpr_load, &l), 0);
    usleep(300000);
    ug_shutdown_opts o = {.drain_timeout_ms = 5000, .handoff = 1};
    CU_ASSERT_EQUAL(ug_server_shutdown(a.srv, &o), 0);
    ts_join(&a);
    CU_ASSERT_EQUAL(a.run_rc, 0); /* drained, nothing forced */
    CU_ASSERT_EQUAL(ug_server_dup_listener(a.srv), -EBADF);
    ug_stats sa_before;
    ug_server_stats(a.srv, &sa_before);
    /* After A's close every connection is B's: the socket took no filter and kept its queue. */
    unsigned ok_at_close = __atomic_load_n(&l.ok, __ATOMIC_RELAXED);
    usleep(300000);
    CU_ASSERT(connects_within(port, 200));
    __atomic_store_n(&l.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < NCL; i++) pthread_join(thr[i], NULL);
    CU_ASSERT_EQUAL(l.failed, 0);
    CU_ASSERT(l.ok > ok_at_close); /* served on after A left */
    ug_stats sb;
    CU_ASSERT_EQUAL(ts_stats_now(&b, &sb), 0);
    CU_ASSERT(sa_before.conns_accepted > 0);
    CU_ASSERT(sb.conns_accepted > 0);
    CU_ASSERT(sa_before.conns_accepted + sb.conns_accepted >= l.ok);
    ug_server_free(a.srv);
    ts_stop(&b);
}

/* A socket that is not listening would make every accept fail: refused at create. */
static void test_not_listening(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.listen_fd = fd;
    ug_server *srv = NULL;
    CU_ASSERT_EQUAL(ug_server_create(&srv, &cfg), -EINVAL);
    int ufd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cfg.listen_fd = ufd;
    CU_ASSERT_EQUAL(ug_server_create(&srv, &cfg), -EINVAL);
    close(fd); /* still the caller's after a failed create */
    close(ufd);
}

static void test_dup_listener(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int fd = ug_server_dup_listener(sc.srv);
    CU_ASSERT_FATAL(fd >= 3);
    CU_ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    struct sockaddr_in a;
    socklen_t sl = sizeof a;
    CU_ASSERT_EQUAL(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    CU_ASSERT_EQUAL(ntohs(a.sin_port), sc.port);
    CU_ASSERT_EQUAL(ug_server_dup_listener(NULL), -EINVAL);
    ts_drain(&sc);
    CU_ASSERT_EQUAL(ug_server_dup_listener(sc.srv), -EBADF); /* the gate has closed */
    ug_server_free(sc.srv);
    close(fd);
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("restart", NULL, NULL);
    CU_add_test(s, "an inherited socket with a stale SYN filter", test_stale_filter);
    CU_add_test(s, "a hand-off close on a shared socket", test_handoff_shared_socket);
    CU_add_test(s, "the listener duplicated for a successor", test_dup_listener);
    CU_add_test(s, "a socket that is not listening", test_not_listening);
}

int main(int argc, char **argv) {
    ts_init(argc, argv);
    return tu_main(register_suites, 120);
}
