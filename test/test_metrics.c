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

static char text[65536];

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

/* A histogram's samples: name_bucket{le="..."} (cumulative, ending with le="+Inf"), then
 * name_sum and name_count (equal to the +Inf bucket). 0, or -1 at the first fault. */
static int hist_sample(const char *fam, const char *l, size_t n, double v, double *last,
                       int *inf_seen, double *inf) {
    size_t fl = strlen(fam);
    if (!strncmp(l + fl, "_bucket{le=\"", 12)) {
        if (*inf_seen || v < *last) return -1; /* cumulative, +Inf last */
        *last = v;
        if (!strncmp(l + fl + 12, "+Inf\"}", 6)) {
            *inf_seen = 1;
            *inf = v;
        }
        return 0;
    }
    if (!strncmp(l + fl, "_sum ", 5)) return *inf_seen ? 0 : -1;
    if (!strncmp(l + fl, "_count ", 7)) return *inf_seen && v == *inf ? 0 : -1;
    (void)n;
    return -1;
}

/* Text format 0.0.4 as Prometheus parses it, the parts ugate uses: HELP then TYPE before a
 * family's samples, each family once, sample names of the family, counters ending in
 * _total, histograms as hist_sample says, numeric values, a final newline. Returns the
 * number of families, or -1. */
static int check_format(void) {
    char fam[128] = "", type[16] = "";
    int families = 0, help_seen = 0;
    char seen[64][128];
    double last = 0, inf = 0;
    int inf_seen = 0;
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
            last = 0;
            inf_seen = 0;
        } else if (!strncmp(l, "# TYPE ", 7)) {
            size_t fl = strlen(fam);
            if (!help_seen || strncmp(l + 7, fam, fl) || l[7 + fl] != ' ') return -1;
            size_t tl = n - 8 - fl;
            if (tl >= sizeof type) return -1;
            memcpy(type, l + 8 + fl, tl);
            type[tl] = '\0';
            if (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram"))
                return -1;
            if (!strcmp(type, "counter") && (fl < 6 || strcmp(fam + fl - 6, "_total"))) return -1;
        } else {
            size_t fl = strlen(fam);
            int hist = !strcmp(type, "histogram");
            if (!type[0] || strncmp(l, fam, fl) || (!hist && l[fl] != ' ' && l[fl] != '{'))
                return -1;
            char *v = memrchr(l, ' ', n);
            if (!v) return -1;
            char *end;
            double val = strtod(v + 1, &end);
            if (end != e || val < 0) return -1;
            if (hist && hist_sample(fam, l, n, val, &last, &inf_seen, &inf)) return -1;
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
    CU_ASSERT(check_format() >= 45);
    CU_ASSERT_EQUAL(sample_value("ugate_connections_accepted_total"), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_connections_closed_total"), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_connections_open"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_requests_read_total"), 8);
    CU_ASSERT_EQUAL(sample_value("ugate_requests_total{code=\"200\"}"), 5);
    CU_ASSERT_EQUAL(sample_value("ugate_requests_total{code=\"404\"}"), 2);
    CU_ASSERT_EQUAL(sample_value("ugate_requests_total{code=\"400\"}"), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_requests_total{code=\"500\"}"), -1); /* none: absent */
    /* Every request answered is observed once; these took far less than 10 s. */
    CU_ASSERT_EQUAL(sample_value("ugate_request_duration_seconds_count"), 8);
    CU_ASSERT_EQUAL(sample_value("ugate_request_duration_seconds_bucket{le=\"+Inf\"}"), 8);
    CU_ASSERT_EQUAL(sample_value("ugate_request_duration_seconds_bucket{le=\"10\"}"), 8);
    CU_ASSERT_EQUAL(sample_value("ugate_connections{state=\"idle\"}"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_connections{state=\"reading\"}"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_requests_deferred"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_holds"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_drain_seconds"), 0);
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

/* Poll the exposition until the sample has the value (or 5 s pass); its last value. */
static long long wait_sample(ug_server *srv, const char *sample, long long want) {
    long long v = -1;
    for (int i = 0; i < 1000; i++) {
        if (ug_server_metrics(srv, text, sizeof text) > 0 && (v = sample_value(sample)) == want)
            break;
        usleep(5000);
    }
    return v;
}

static double sample_float(const char *sample) {
    size_t n = strlen(sample);
    for (const char *l = text; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l))
        if (!strncmp(l, sample, n) && l[n] == ' ') return strtod(l + n + 1, NULL);
    return -1;
}

/* The gauges follow what the connections do, the histogram sorts durations it was given,
 * and the drain's figures appear once the gate closes. */
static void test_gauges_histogram_drain(void) {
    srv_ctx sc;
    ts_start(&sc, NULL);
    int idle = tu_connect(sc.port), slow = tu_connect(sc.port);
    CU_ASSERT_FATAL(idle >= 0 && slow >= 0);
    CU_ASSERT_EQUAL(wait_sample(sc.srv, "ugate_connections{state=\"new\"}", 2), 2);
    get(idle, GET_ROOT, 200);
    CU_ASSERT_EQUAL(wait_sample(sc.srv, "ugate_connections{state=\"idle\"}", 1), 1);
    static const char LATE[] = "GET /late?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(slow, LATE, sizeof LATE - 1), 0);
    CU_ASSERT_EQUAL(wait_sample(sc.srv, "ugate_connections{state=\"handler\"}", 1), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_requests_deferred"), 1);
    usleep(100000);
    CU_ASSERT(ug_server_metrics(sc.srv, text, sizeof text) > 0);
    double age = sample_float("ugate_oldest_deferred_age_seconds");
    CU_ASSERT(age >= 0.09 && age < 0.3);
    char body[64];
    CU_ASSERT_EQUAL(tu_read_response(slow, body, sizeof body, NULL), 200);
    CU_ASSERT_EQUAL(wait_sample(sc.srv, "ugate_request_duration_seconds_count", 2), 2);
    /* the GET / took microseconds, the late one at least its 300 ms */
    CU_ASSERT_EQUAL(sample_value("ugate_request_duration_seconds_bucket{le=\"0.25\"}"), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_request_duration_seconds_bucket{le=\"+Inf\"}"), 2);
    CU_ASSERT(sample_float("ugate_request_duration_seconds_sum") >= 0.3);
    CU_ASSERT_EQUAL(sample_value("ugate_oldest_deferred_age_seconds"), 0);
    /* A drain with one request in progress: the figures while it runs, then at its end. */
    static const char LATE2[] = "GET /late?ms=400 HTTP/1.1\r\nHost: t\r\n\r\n";
    CU_ASSERT_EQUAL(tu_send_all(slow, LATE2, sizeof LATE2 - 1), 0);
    CU_ASSERT_EQUAL(wait_sample(sc.srv, "ugate_requests_deferred", 1), 1);
    ug_shutdown_opts o = {.drain_timeout_ms = 5000};
    CU_ASSERT_EQUAL(ug_server_shutdown(sc.srv, &o), 0);
    CU_ASSERT_EQUAL(wait_sample(sc.srv, "ugate_gate_state{state=\"draining\"}", 1), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_drain_connections_at_close"), 2);
    double left = sample_float("ugate_drain_deadline_seconds");
    CU_ASSERT(left > 4.0 && left <= 5.0);
    CU_ASSERT_EQUAL(tu_read_response(slow, body, sizeof body, NULL), 200);
    CU_ASSERT_EQUAL(tu_wait_eof(slow, 3000), 1);
    CU_ASSERT_EQUAL(tu_wait_eof(idle, 3000), 1);
    ts_join(&sc);
    CU_ASSERT(ug_server_metrics(sc.srv, text, sizeof text) > 0);
    CU_ASSERT_EQUAL(sample_value("ugate_gate_state{state=\"closed\"}"), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_drain_connections_drained_total"), 2);
    CU_ASSERT_EQUAL(sample_value("ugate_drain_connections_forced_total"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_drain_requests_drained_total"), 1);
    CU_ASSERT_EQUAL(sample_value("ugate_drain_requests_forced_total"), 0);
    CU_ASSERT(sample_float("ugate_drain_seconds") > 0.05);
    CU_ASSERT_EQUAL(sample_value("ugate_drain_deadline_seconds"), 0);
    double drained = sample_float("ugate_drain_seconds");
    usleep(50000); /* a drain that has ended does not grow */
    CU_ASSERT(ug_server_metrics(sc.srv, text, sizeof text) > 0);
    CU_ASSERT_EQUAL(sample_float("ugate_drain_seconds"), drained);
    CU_ASSERT_EQUAL(sample_value("ugate_connections{state=\"idle\"}"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_connections{state=\"lingering\"}"), 0);
    CU_ASSERT_EQUAL(sample_value("ugate_connections{state=\"closing\"}"), 0);
    tu_forget(idle);
    tu_forget(slow);
    close(idle);
    close(slow);
    ug_server_free(sc.srv);
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
    CU_add_test(s, "gauges, the histogram and the drain's figures", test_gauges_histogram_drain);
    CU_add_test(s, "read while the loops serve", test_read_while_serving);
}

int main(int argc, char **argv) {
    ts_init(argc, argv);
    return tu_main(register_suites, 120);
}
