#define _GNU_SOURCE
/* Direct descriptors measured where they cost least to build: a floor responder like
 * bench/anchors/limit/limit_uring.c (multishot accept, multishot recv on a buffer ring, one
 * fixed response per "\r\n\r\n", no parsing, no timers) that, unlike it, sends through the ring
 * and closes as ugate does (send, shutdown SHUT_WR, read to the client's FIN, close), so that
 * what differs between direct and fd is how a socket is named, and so where its shutdown and
 * close can run (fd-ringshut separates the two):
 *
 *   fd          regular descriptors; shutdown(2) and close(2) called inline, as ugate does
 *   fd-ringshut regular descriptors; IORING_OP_SHUTDOWN and IORING_OP_CLOSE (the costs of the
 *               ring's shutdown on its own, without the table)
 *   direct      direct descriptors: multishot accept into the fixed-file table
 *               (IORING_FILE_INDEX_ALLOC), recv, send, shutdown and close by index
 *               (IOSQE_FIXED_FILE); with no regular descriptor, shutdown and close can only
 *               go through the ring
 *
 * usage: direct_fd PORT MODE [close]   (close: one response per connection)
 * tools/bench --lever direct-fd runs direct against fd in pairs. Not part of ugate. */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define NBUF 4096
#define BUFSZ 4096
#define BGID 1
#define MAX_CONNS 65536
#define MAX_BATCH 64 /* responses per send: more requests in one read are answered in turn */
enum op { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_SHUT, OP_CLOSE };
#define UD(op, id) (((unsigned long long)(op) << 32) | (unsigned)(id))

static const char RESP[] = "HTTP/1.1 200 OK\r\nServer: L\r\nContent-Type: text/plain\r\n"
                           "Content-Length: 13\r\n\r\nHello, World!";
/* conn/request: said, as ugate says it, so that the client does not find the close by an error */
static const char RESP_CLOSE[] = "HTTP/1.1 200 OK\r\nServer: L\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 13\r\nConnection: close\r\n\r\nHello, World!";
static char out[MAX_BATCH * sizeof RESP];
static unsigned resp_len = sizeof RESP - 1;

struct conn {
    unsigned pending;            /* requests read and not yet answered */
    unsigned sending;            /* bytes of the send in flight, 0: none */
    unsigned sent;               /* of those, sent so far */
    unsigned char eof;           /* the client's FIN (or an error) was read */
    unsigned char shut;          /* the response is out and SHUT_WR issued (close mode) */
    unsigned char shut_inflight; /* IORING_OP_SHUTDOWNs not completed: the close waits */
    unsigned char answered;      /* close mode: its one response is queued, what follows ignored */
    unsigned char close_wanted;
};
static struct conn conns[MAX_CONNS];
static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static int direct, ring_close, close_each;

static struct io_uring_sqe *sqe(void) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) {
        io_uring_submit(&ring);
        s = io_uring_get_sqe(&ring);
    }
    if (!s) {
        fprintf(stderr, "direct_fd: no SQE\n");
        exit(1);
    }
    return s;
}
static void named(struct io_uring_sqe *s) {
    if (direct) s->flags |= IOSQE_FIXED_FILE;
}
static void arm_accept(int lfd) {
    struct io_uring_sqe *s = sqe();
    if (direct)
        io_uring_prep_multishot_accept_direct(s, lfd, NULL, NULL, 0);
    else
        io_uring_prep_multishot_accept(s, lfd, NULL, NULL, 0);
    io_uring_sqe_set_data64(s, UD(OP_ACCEPT, lfd));
}
static void arm_recv(int id) {
    struct io_uring_sqe *s = sqe();
    io_uring_prep_recv_multishot(s, id, NULL, 0, 0);
    named(s);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    io_uring_sqe_set_data64(s, UD(OP_RECV, id));
}
static void post_send(int id, unsigned off) {
    struct io_uring_sqe *s = sqe();
    io_uring_prep_send(s, id, out + off, conns[id].sending - off, MSG_NOSIGNAL);
    named(s);
    io_uring_sqe_set_data64(s, UD(OP_SEND, id));
}
/* A failure needs nothing more: the receive ends, and its end closes. */
static void conn_shutdown(int id, int how) {
    if (!ring_close) {
        (void)shutdown(id, how);
        return;
    }
    struct io_uring_sqe *s = sqe();
    io_uring_prep_shutdown(s, id, how);
    named(s);
    conns[id].shut_inflight++;
    io_uring_sqe_set_data64(s, UD(OP_SHUT, id));
}
/* Only once the multishot receive has ended (c->eof): the ring's request holds the file, so
 * its last completion must come before the id can be reused. */
static void conn_close(int id) {
    struct conn *c = &conns[id];
    if (c->shut_inflight) {
        /* The kernel runs a shutdown on an io-wq worker and looks its descriptor (or table
         * index) up there, at issue: closed before that, the id may already name the next
         * connection, which the shutdown would then end. */
        c->close_wanted = 1;
        return;
    }
    if (!ring_close) {
        close(id);
        memset(c, 0, sizeof *c);
        return;
    }
    struct io_uring_sqe *s = sqe();
    if (direct)
        io_uring_prep_close_direct(s, (unsigned)id);
    else
        io_uring_prep_close(s, id);
    io_uring_sqe_set_data64(s, UD(OP_CLOSE, id));
    /* Reset now, not at the close's completion: nothing is armed on the id any more, and
     * the kernel cannot hand it to an accept before the close has run. */
    memset(c, 0, sizeof *c);
}
static void send_more(int id) {
    struct conn *c = &conns[id];
    if (c->sending) return;
    if (!c->pending) {
        if (!close_each || c->shut) return;
        if (c->eof) { /* the client is gone already: nothing to linger for */
            conn_close(id);
            return;
        }
        c->shut = 1;
        conn_shutdown(id, SHUT_WR);
        return;
    }
    unsigned k = c->pending < MAX_BATCH ? c->pending : MAX_BATCH;
    if (close_each) { /* one response per connection */
        k = 1;
        c->answered = 1;
    }
    c->pending = close_each ? 0 : c->pending - k;
    c->sending = k * resp_len;
    c->sent = 0;
    post_send(id, 0);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: direct_fd PORT fd|fd-ringshut|direct [close]\n");
        return 2;
    }
    int port = atoi(argv[1]), one = 1;
    if (!strcmp(argv[2], "direct"))
        direct = ring_close = 1;
    else if (!strcmp(argv[2], "fd-ringshut"))
        ring_close = 1;
    else if (strcmp(argv[2], "fd")) {
        fprintf(stderr, "direct_fd: mode fd, fd-ringshut or direct, not '%s'\n", argv[2]);
        return 2;
    }
    close_each = argc > 3 && !strcmp(argv[3], "close");
    if (close_each)
        memcpy(out, RESP_CLOSE, resp_len = sizeof RESP_CLOSE - 1); /* one per connection */
    else
        for (unsigned i = 0; i < MAX_BATCH; i++) memcpy(out + i * resp_len, RESP, resp_len);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) {
        perror("socket");
        return 1;
    }
    /* Accepted sockets inherit TCP_NODELAY from the listener: a direct descriptor has no
     * setsockopt(2), and ugate sets it on its listener too. */
    if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one)) {
        perror("setsockopt");
        return 1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(lfd, (void *)&a, sizeof a) || listen(lfd, 4096)) {
        perror("listen");
        return 1;
    }
    struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
    int e = io_uring_queue_init_params(4096, &ring, &p);
    if (e < 0) {
        fprintf(stderr, "direct_fd: ring: %s\n", strerror(-e));
        return 1;
    }
    if (direct) {
        /* The table holds every connection: its size bounds them as RLIMIT_NOFILE bounds
         * regular descriptors (and the kernel caps it at that limit). */
        struct rlimit rl;
        unsigned n = MAX_CONNS;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < n) n = (unsigned)rl.rlim_cur;
        e = io_uring_register_files_sparse(&ring, n);
        if (e < 0) {
            fprintf(stderr, "direct_fd: sparse file table of %u: %s\n", n, strerror(-e));
            return 1;
        }
    }
    if (posix_memalign((void **)&br, 4096, NBUF * sizeof(struct io_uring_buf))) return 1;
    bufs = malloc((size_t)NBUF * BUFSZ);
    if (!bufs) return 1;
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = BGID};
    e = io_uring_register_buf_ring(&ring, &reg, 0);
    if (e) {
        fprintf(stderr, "direct_fd: buffer ring: %s\n", strerror(-e));
        return 1;
    }
    io_uring_buf_ring_init(br);
    for (int i = 0; i < NBUF; i++)
        io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, i, io_uring_buf_ring_mask(NBUF),
                              i);
    io_uring_buf_ring_advance(br, NBUF);
    arm_accept(lfd);
    for (;;) {
        e = io_uring_submit_and_wait(&ring, 1);
        if (e < 0 && e != -EINTR) {
            fprintf(stderr, "direct_fd: wait: %s\n", strerror(-e));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            enum op op = (enum op)(cqe->user_data >> 32);
            int id = (int)(cqe->user_data & 0xffffffffu), res = cqe->res;
            struct conn *c = id >= 0 && id < MAX_CONNS ? &conns[id] : NULL;
            switch (op) {
            case OP_ACCEPT:
                if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept(lfd);
                if (res < 0) break;
                if (res >= MAX_CONNS) { /* only regular descriptors can be this high */
                    close(res);
                    break;
                }
                memset(&conns[res], 0, sizeof conns[res]);
                arm_recv(res);
                break;
            case OP_RECV: {
                if (res == -ENOBUFS) {
                    if (!(cqe->flags & IORING_CQE_F_MORE)) arm_recv(id);
                    break;
                }
                if (res <= 0) { /* FIN, reset: once the response is out, close */
                    c->eof = 1;
                    if (!c->sending) {
                        if (close_each && !c->shut && c->pending)
                            send_more(id);
                        else
                            conn_close(id);
                    }
                    break;
                }
                unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                const char *b = bufs + (size_t)bid * BUFSZ;
                for (int j = 3; j < res && !c->answered; j++)
                    if (b[j] == '\n' && b[j - 1] == '\r' && b[j - 2] == '\n' && b[j - 3] == '\r')
                        c->pending++;
                io_uring_buf_ring_add(br, (void *)b, BUFSZ, (unsigned short)bid,
                                      io_uring_buf_ring_mask(NBUF), 0);
                io_uring_buf_ring_advance(br, 1);
                send_more(id);
                if (!(cqe->flags & IORING_CQE_F_MORE)) arm_recv(id);
                break;
            }
            case OP_SEND:
                if (res <= 0) { /* the receive ends at the shutdown, and its end closes */
                    c->sending = 0;
                    c->pending = 0;
                    conn_shutdown(id, SHUT_RDWR);
                    /* the receive ended already: nothing else will close (after the shutdown) */
                    if (c->eof) conn_close(id);
                    break;
                }
                c->sent += (unsigned)res;
                if (c->sent < c->sending) { /* short: the rest */
                    post_send(id, c->sent);
                    break;
                }
                c->sending = 0;
                send_more(id);
                if (c->eof && !c->sending && (!close_each || c->shut)) conn_close(id);
                break;
            case OP_SHUT: /* its result is of no use: the receive's end closes */
                c->shut_inflight--;
                if (!c->shut_inflight && c->close_wanted) conn_close(id);
                break;
            case OP_CLOSE: /* the connection's state went when the close was issued */
                break;
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}
