/* ugate-upload: POST a generated body of N bytes to ugate-serve's /upload (Content-Length or
 * chunked), check the answer's size and CRC-32 against its own (zlib), and, given the
 * server's pid, how much its resident memory grew: its VmHWM (peak) after the upload against
 * its VmRSS before. Prints one JSON line. Loopback only.
 *
 *   ugate-upload --port P --bytes N [--chunked] [--pid PID] [--max-growth-mib M]
 *
 * Exit: 0 the answer matched (and the growth stayed within M), 1 it did not, 2 usage or
 * connection error. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define BLOCK (64u * 1024)

static long status_kib(int pid, const char *field) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl) && line[fl] == ':') v = strtol(line + fl + 1, NULL, 10);
    fclose(f);
    return v;
}

static int send_all(int fd, const void *p, size_t n) {
    const char *b = p;
    while (n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    unsigned long port = 0, max_growth_mib = 0;
    unsigned long long bytes = 0;
    int chunked = 0, pid = 0;
    static const struct option opts[] = {
        {"port", required_argument, 0, 'p'},
        {"bytes", required_argument, 0, 'b'},
        {"chunked", no_argument, 0, 'c'},
        {"pid", required_argument, 0, 'P'},
        {"max-growth-mib", required_argument, 0, 'm'},
        {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p':
            port = strtoul(optarg, NULL, 10);
            break;
        case 'b':
            bytes = strtoull(optarg, NULL, 10);
            break;
        case 'c':
            chunked = 1;
            break;
        case 'P':
            pid = atoi(optarg);
            break;
        case 'm':
            max_growth_mib = strtoul(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr, "usage: ugate-upload --port P --bytes N [--chunked] [--pid PID] "
                            "[--max-growth-mib M]\n");
            return 2;
        }
    }
    if (!port || port > 65535) {
        fprintf(stderr, "ugate-upload: --port is required\n");
        return 2;
    }
    long rss_before = pid ? status_kib(pid, "VmRSS") : -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {60, 0};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) ||
        connect(fd, (struct sockaddr *)&a, sizeof a)) {
        perror("ugate-upload: connect");
        return 2;
    }
    char head[256];
    int n = chunked ? snprintf(head, sizeof head,
                               "POST /upload HTTP/1.1\r\nHost: t\r\n"
                               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                    : snprintf(head, sizeof head,
                               "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %llu\r\n"
                               "Connection: close\r\n\r\n",
                               bytes);
    double t0 = now_s();
    static unsigned char block[BLOCK];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    uLong crc = crc32(0L, Z_NULL, 0);
    int ok = send_all(fd, head, (size_t)n) == 0;
    for (unsigned long long off = 0; ok && off < bytes;) {
        size_t k = bytes - off < BLOCK ? (size_t)(bytes - off) : BLOCK;
        for (size_t i = 0; i < k; i += 8) { /* xorshift64: cheap, and not compressible */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memcpy(block + i, &x, k - i < 8 ? k - i : 8);
        }
        crc = crc32(crc, block, (uInt)k);
        if (chunked) {
            n = snprintf(head, sizeof head, "%zx\r\n", k);
            ok = send_all(fd, head, (size_t)n) == 0;
        }
        ok = ok && send_all(fd, block, k) == 0;
        if (chunked) ok = ok && send_all(fd, "\r\n", 2) == 0;
        off += k;
    }
    if (ok && chunked) ok = send_all(fd, "0\r\n\r\n", 5) == 0;
    char resp[1024];
    size_t got = 0;
    for (;;) {
        ssize_t k = recv(fd, resp + got, sizeof resp - 1 - got, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
        if (got == sizeof resp - 1) break;
    }
    resp[got] = 0;
    close(fd);
    double secs = now_s() - t0;
    char want[64];
    snprintf(want, sizeof want, "bytes=%llu crc32=%08lx\n", bytes, (unsigned long)crc);
    const char *body = strstr(resp, "\r\n\r\n");
    int match = ok && !strncmp(resp, "HTTP/1.1 200 ", 13) && body && !strcmp(body + 4, want);
    long hwm_after = pid ? status_kib(pid, "VmHWM") : -1;
    long growth = rss_before >= 0 && hwm_after >= 0 ? hwm_after - rss_before : -1;
    printf("{\"bytes\":%llu,\"chunked\":%d,\"match\":%d,\"seconds\":%.3f,\"mib_per_s\":%.0f,"
           "\"rss_before_kib\":%ld,\"hwm_after_kib\":%ld,\"growth_kib\":%ld}\n",
           bytes, chunked, match, secs, secs > 0 ? (double)bytes / 1048576.0 / secs : 0.0,
           rss_before, hwm_after, growth);
    if (!match) {
        fprintf(stderr, "ugate-upload: want \"%.*s\", got: %.300s\n", (int)strlen(want) - 1, want,
                resp);
        return 1;
    }
    if (max_growth_mib && (growth < 0 || growth > (long)max_growth_mib * 1024)) {
        fprintf(stderr, "ugate-upload: the server grew by %ld KiB (limit %lu MiB)\n", growth,
                max_growth_mib);
        return 1;
    }
    return 0;
}
