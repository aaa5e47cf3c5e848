/* The Prometheus exposition (src/metrics.c), end to end: known traffic, then the exposition
 * read from another thread while the loops run must say exactly that, in a well-formed text
 * format 0.0.4. With UGATE_METRICS_DUMP=path it also writes the exposition there, for
 * `promtool check metrics` (test/check_metrics.sh). */
#include "testserver.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char GET_ROOT[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
static const char GET_NOPE[] = "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n";
static const char BAD[] = "GET / HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n";

static char text[16384];

/* The value of the sample whose name (with labels) is exactly `sample`, or -1. */
static long long sample_value(const char *sample) {
    size_t n = strlen(sample);
    for (const char *l = text; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
        if (!strncmp(l, sample, n) && l[n] == ' ') return strtoll(l + n + 1, NULL, 10);
    }
    return -1;
}

static int name_ok(const char *p, size_t n) {
    if (!n) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return 0;
    }
    return 1;
}

/* Text format 0.0.4 as Prometheus parses it, the parts ugate uses: HELP then TYPE before a
 * family's samples, each family once, sample names of the family, counters ending in
 * _total, integer values, a final newline. Returns the number of families, or -1. */
static int check_format(void) {
    char fam[128] = "", type[16] = "";
    int families = 0, help_seen = 0;
    char seen[64][128];
    size_t len = strlen(text);
    if (!len || text[len - 1] != '\n') return -1;
    for (char *l = text; *l;) {
        char *e = strchr(l, '\n');
        size_t n = (size_t)(e - l);
        if (!strncmp(l, "# HELP ", 7)) {
            char *sp = memchr(l + 7, ' ', n - 7);
            if (!sp || !name_ok(l + 7, (size_t)(sp - l - 7)) || (size_t)(sp - l - 7) >= sizeof fam)
                return -1;
            memcpy(fam, l + 7, (size_t)(sp - l - 7));
            fam[sp - l - 7] = '\0';
            for (int i = 0; i < families; i++)
                if (!strcmp(seen[i], fam)) return -1; /* a family twice */
            if (families == 64) return -1;
            strcpy(seen[families++], fam);
            help_seen = 1;
            type[0] = '\0';
        } else if (!strncmp(l, "# TYPE ", 7)) {
            size_t fl = strlen(fam);
            if (!help_seen || strncmp(l + 7, fam, fl) || l[7 + fl] != ' ') return -1;
            size_t tl = n - 8 - fl;
            if (tl >= sizeof type) return -1;
            memcpy(type, l + 8 + fl, tl);
            type[tl] = '\0';
            if (strcmp(type, "counter") && strcmp(type, "gauge")) return -1;
            if (!strcmp(type, "counter") && (fl < 6 || strcmp(fam + fl - 6, "_total"))) return -1;
        } else {
            size_t fl = strlen(fam);
            if (!type[0] || strncmp(l, fam, fl) || (l[fl] != ' ' && l[fl] != '{')) return -1;
            char *v = memchr(l, ' ', n);
            if (!v) return -1;
            char *end;
            strtoull(v + 1, &end, 10);
            if (end != e) return -1;
        }
        l = e + 1;
    }
    return families;
}

static void get(int fd, const char *req, int want) {
    char body[256];
    CU_ASSERT_EQUAL(tu_send_all(fd, req, strlen(req)), 0);
    CU_ASSERT_EQUAL(tu_read_response(fd, body, sizeof body, NULL), want);
}

static void test_known_traffic(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int fd = tu_connect(sc.port);
    CU_ASSERT_FATAL(fd >= 0);
    for (int i = 0; i < 5; i++) get(fd, GET_ROOT, 200);
    for (int i = 0; i < 2; i++) get(fd, GET_NOPE, 404);
    get(fd, BAD, 400); /* and the server closes */
    CU_ASSERT_EQUAL(tu_wait_eof(fd, 2000), 1);
    tu_forget(fd);
    close(fd);
    int n = -1;
    for (int i = 0; i < 200; i++) { /* the close reaches the counters on the loop's turn */
        n = ug_server_metrics(sc.srv, text, sizeof text);
        if (n > 0 && sample_value("ugate_connections_closed_total") == 1) break;
        usleep(5000);
    }
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT_EQUAL((size_t)n, strlen(text));
    CU_ASSERT(check_format() >= 30);
    CU_ASSERT_EQUAL(sample_value("ugate_connections_accepted_total"), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_connections_closed_total"), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_connections_open"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_requests_total"), 8);
    CU_ASSERT_EQUAL(sample_value("ugate_bad_requests_total"), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_responses_total{class=\"2xx\"}"), 5);
    CU_ASSERT_EQUAL(sample_value("ugate_responses_total{class=\"4xx\"}"), 3);
    CU_ASSERT_EQUAL(sample_value("ugate_responses_total{class=\"5xx\"}"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_requests_inflight"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_gate_state{state=\"open\"}"), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_gate_state{state=\"draining\"}"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_loops"), (long long)g_threads);
    const char *dump = getenv("UGATE_METRICS_DUMP");
    if (dump) {
        FILE *f = fopen(dump, "w");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        CU_ASSERT_EQUAL(fwrite(text, 1, (size_t)n, f), (size_t)n);
        CU_ASSERT_EQUAL(fclose(f), 0);
    }
    /* A buffer too small: -ENOSPC and an empty string, never a truncated exposition. */
    char small[256];
    CU_ASSERT_EQUAL(ug_server_metrics(sc.srv, small, sizeof small), -ENOSPC);
    CU_ASSERT_EQUAL(small[0], '\0');
    CU_ASSERT_EQUAL(ug_server_metrics(sc.srv, NULL, 10), -EINVAL);
    CU_ASSERT_EQUAL(ug_server_metrics(NULL, small, sizeof small), -EINVAL);
    ts_stop(&sc);
}

/* Read while the loops serve: every read is well-formed and the counters never go back. */
typedef struct {
    uint16_t port;
    int done;
} load_arg;

static void *keepalive_load(void *arg) {
    load_arg *a = arg;
    int fd = tu_connect(a->port);
    char body[64];
    for (int i = 0; fd >= 0 && i < 2000; i++) {
        if (tu_send_all(fd, GET_ROOT, sizeof GET_ROOT - 1) ||
            tu_read_response(fd, body, sizeof body, NULL) != 200)
            break;
    }
    if (fd >= 0) {
        tu_forget(fd);
        close(fd);
    }
    __atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_read_while_serving(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    enum { NCL = 4 };
    pthread_t thr[NCL];
    load_arg args[NCL];
    for (int i = 0; i < NCL; i++) {
        args[i] = (load_arg){sc.port, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&thr[i], NULL, keepalive_load, &args[i]), 0);
    }
    long long last = 0;
    int reads = 0, bad = 0, backwards = 0;
    uint64_t t0 = tu_now_ms();
    for (;;) {
        int running = 0;
        for (int i = 0; i < NCL; i++) running += !__atomic_load_n(&args[i].done, __ATOMIC_ACQUIRE);
        if (!running || tu_now_ms() - t0 > 20000) break;
        if (ug_server_metrics(sc.srv, text, sizeof text) <= 0 || check_format() < 0) bad++;
        long long r = sample_value("ugate_responses_total{class=\"2xx\"}");
        if (r < last) backwards++;
        last = r;
        reads++;
        usleep(1000);
    }
    for (int i = 0; i < NCL; i++) pthread_join(thr[i], NULL);
    CU_ASSERT(reads > 0);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(backwards, 0);
    CU_ASSERT(ug_server_metrics(sc.srv, text, sizeof text) > 0);
    CU_ASSERT_EQUAL(sample_value("ugate_responses_total{class=\"2xx\"}"), NCL * 2000);
    ts_stop(&sc);
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("metrics", NULL, NULL);
    CU_add_test(s, "known traffic, exact counts, well-formed", test_known_traffic);
    CU_add_test(s, "read while the loops serve", test_read_while_serving);
}

int main(int argc, char **argv) {
    ts_init(argc, argv);
    return tu_main(register_suites, 120);
}
