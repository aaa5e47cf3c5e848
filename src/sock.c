/* Plain socket syscalls the core needs whatever the backend: listen, options, and the
 * non-blocking accept that drains the kernel's queue when the gate closes. */
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int ug__listen(const char *host, uint16_t port, int backlog, uint16_t *bound_port) {
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        sl = sizeof *a6;
    } else {
        return -EINVAL;
    }
    /* Non-blocking: the gate drains the accept queue with accept4() until EAGAIN. */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    /* TCP_NODELAY before listen(): Linux copies the listener's options into each connection
     * as its handshake completes, so every accepted socket has it without a setsockopt(2)
     * of its own (the listener's nodelay flag says so to conn.c). */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, backlog) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    *bound_port = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
    return fd;
}

int ug__sock_set_nodelay(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ? -errno : 0;
}

int ug__sock_accept_nb(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) return fd;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

/* Make the listener drop new SYNs (a bare SYN: SYN set, ACK clear) while letting the final
 * ACK of handshakes already under way through. A classic BPF socket filter on a listening
 * TCP socket runs before SYN processing, with offset 0 at the TCP header (tcp_filter()).
 * A dropped SYN is retransmitted by the client after about a second, by when the listener is
 * closed and the kernel answers with a reset: the client is refused, late but cleanly, never
 * accepted and then reset. */
int ug__sock_drop_syn(int lfd) {
    static const struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),          /* TCP flags */
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),       /* SYN | ACK */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1), /* bare SYN? */
        BPF_STMT(BPF_RET | BPF_K, 0),                    /* drop */
        BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),          /* keep */
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0],
                              .filter = (struct sock_filter *)code};
    return setsockopt(lfd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0 ? -errno : 0;
}

int ug__sock_check_listening(int fd) {
    int v = 0;
    socklen_t l = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l) < 0) return -errno;
    if (v != SOCK_STREAM) return -EINVAL;
    l = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) < 0) return -errno;
    return v ? 0 : -EINVAL;
}

int ug__sock_detach_filter(int lfd) {
    int unused = 0;
    if (setsockopt(lfd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused) == 0) return 0;
    return errno == ENOENT ? 0 : -errno; /* ENOENT: no filter was attached */
}

int ug__sock_port(int fd, uint16_t *port) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) return -errno;
    if (ss.ss_family == AF_INET)
        *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else if (ss.ss_family == AF_INET6)
        *port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    else
        return -EAFNOSUPPORT;
    return 0;
}

int ug__sock_peer(int fd, struct sockaddr_storage *ss, uint32_t *len) {
    socklen_t l = sizeof *ss;
    if (getpeername(fd, (struct sockaddr *)ss, &l) != 0) return -errno;
    *len = (uint32_t)l;
    return 0;
}
