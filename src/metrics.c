/* The Prometheus text exposition (format 0.0.4) of the server's counters: generated from
 * UG_STATS_FIELDS and the loops' own tables, summed over the loops while they run. */
#include "core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

typedef ug__text metrics_out;
#define put ug__text_put

void ug__text_put(ug__text *o, const char *fmt, ...) {
    if (o->overflow) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len) {
        o->overflow = 1;
        return;
    }
    o->len += (size_t)n;
}

static void family(metrics_out *o, const char *name, const char *type, const char *help) {
    put(o, "# HELP ugate_%s %s\n# TYPE ugate_%s %s\n", name, help, name, type);
}

/* A kind of UG_STATS_FIELDS: its Prometheus type, and the suffix its name takes. */
#define TYPE_COUNTER "counter"
#define TYPE_GAUGE "gauge"
#define SUFFIX_COUNTER "_total"
#define SUFFIX_GAUGE ""

static const char *const view_names[UG_VIEW_COUNT] = UG__VIEW_NAMES;

/* Seconds from nanoseconds with `decimals` digits (1..9), by integer arithmetic: printf's %f
 * and %g follow LC_NUMERIC, and a decimal comma is not the exposition format. */
typedef struct secs_buf {
    char s[UG__U64_DIGITS + 11];
} secs_buf;

static const char *secs(secs_buf *b, uint64_t ns, int decimals) {
    uint64_t div = 1;
    for (int i = decimals; i < 9; i++) div *= 10;
    snprintf(b->s, sizeof b->s, "%llu.%0*llu", (unsigned long long)(ns / 1000000000u), decimals,
             (unsigned long long)(ns % 1000000000u / div));
    return b->s;
}

/* A bucket bound as the shortest decimal ("0.00025", "2.5", "10"). */
static const char *le_label(secs_buf *b, uint64_t ns) {
    secs(b, ns, 9);
    char *end = b->s + strlen(b->s);
    while (end[-1] == '0') *--end = '\0';
    if (end[-1] == '.') end[-1] = '\0';
    return b->s;
}

/* What the loops count beyond ug_stats: by code, by connection state, the histogram, the
 * oldest deferred request. Each value is one loop's relaxed load, summed. */
static void loop_metrics(const ug_server *srv, metrics_out *o) {
    family(o, "requests_total", "counter",
           "Responses by status code (counted when the response head is queued).");
    for (int code = UG__STATUS_MIN; code <= UG__STATUS_MAX; code++) {
        uint64_t n = 0;
        for (uint32_t i = 0; i < srv->nloops; i++) n += UG_GAUGE_GET(srv->loops[i]->codes[code]);
        if (n) put(o, "ugate_requests_total{code=\"%d\"} %llu\n", code, (unsigned long long)n);
    }
    family(o, "connections", "gauge", "Connections open now, by what they are doing.");
    for (int v = UG_VIEW_NONE + 1; v < UG_VIEW_COUNT; v++) {
        uint64_t n = 0;
        for (uint32_t i = 0; i < srv->nloops; i++) n += UG_GAUGE_GET(srv->loops[i]->views[v]);
        put(o, "ugate_connections{state=\"%s\"} %llu\n", view_names[v], (unsigned long long)n);
    }
    uint64_t deferred = 0, oldest_ms = 0, sum_ns = 0, count = 0;
    uint64_t buckets[UG__DURATION_NBUCKETS + 1] = {0};
    for (uint32_t i = 0; i < srv->nloops; i++) {
        const ug__loop *lp = srv->loops[i];
        deferred += UG_GAUGE_GET(lp->views[UG_VIEW_HANDLER]);
        uint64_t t = UG_GAUGE_GET(lp->t_oldest_deferred_ms);
        if (t && (!oldest_ms || t < oldest_ms)) oldest_ms = t;
        for (int b = 0; b <= UG__DURATION_NBUCKETS; b++)
            buckets[b] += UG_GAUGE_GET(lp->duration_counts[b]);
        sum_ns += UG_GAUGE_GET(lp->duration_sum_ns);
    }
    family(o, "request_duration_seconds", "histogram",
           "From the server starting to read a request to its response's last byte queued.");
    secs_buf sb;
    for (int b = 0; b <= UG__DURATION_NBUCKETS; b++) {
        count += buckets[b];
        if (b < UG__DURATION_NBUCKETS)
            put(o, "ugate_request_duration_seconds_bucket{le=\"%s\"} %llu\n",
                le_label(&sb, ug__duration_bounds_ns[b]), (unsigned long long)count);
        else
            put(o, "ugate_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                (unsigned long long)count);
    }
    put(o, "ugate_request_duration_seconds_sum %s\n", secs(&sb, sum_ns, 9));
    put(o, "ugate_request_duration_seconds_count %llu\n", (unsigned long long)count);
    family(o, "requests_deferred", "gauge",
           "Requests deferred by their handler (UG_LATER) or streaming, now.");
    put(o, "ugate_requests_deferred %llu\n", (unsigned long long)deferred);
    uint64_t now_ms = ug__clock_ns() / 1000000u;
    family(o, "oldest_deferred_age_seconds", "gauge",
           "Age of the oldest request deferred by its handler and waiting only for it (0 if "
           "none).");
    put(o, "ugate_oldest_deferred_age_seconds %s\n",
        secs(&sb, oldest_ms && now_ms > oldest_ms ? (now_ms - oldest_ms) * 1000000u : 0, 3));
}

/* The drain's figures, once the gate has closed (zero before). */
static void drain_metrics(const ug_server *srv, metrics_out *o) {
    const ug__gate *g = &srv->gate;
    uint32_t holds = atomic_load_explicit(&g->holds, memory_order_relaxed) & ~UG_HOLDS_DROPPED;
    family(o, "holds", "gauge", "Holds outstanding (ug_server_hold), keeping the drain open.");
    put(o, "ugate_holds %u\n", holds);
    uint64_t close_ns = atomic_load_explicit(&g->close_ns, memory_order_relaxed);
    uint64_t end_ns = atomic_load_explicit(&g->end_ns, memory_order_relaxed);
    uint64_t now_ns = ug__clock_ns();
    uint64_t until = end_ns ? end_ns : now_ns;
    family(o, "drain_seconds", "gauge",
           "Time since the gate closed, or the drain's length once it has ended (0 before).");
    secs_buf sb;
    put(o, "ugate_drain_seconds %s\n",
        secs(&sb, close_ns && until > close_ns ? until - close_ns : 0, 3));
    uint64_t deadline_ns = atomic_load_explicit(&g->deadline_ns, memory_order_relaxed);
    int live = close_ns && !end_ns && !ug__gate_forcing(srv) && deadline_ns > now_ns;
    family(o, "drain_deadline_seconds", "gauge",
           "Time left until the drain deadline forces what is still open (0 if none).");
    put(o, "ugate_drain_deadline_seconds %s\n", secs(&sb, live ? deadline_ns - now_ns : 0, 3));
    family(o, "drain_connections_at_close", "gauge", "Connections open when the gate closed.");
    put(o, "ugate_drain_connections_at_close %llu\n",
        (unsigned long long)atomic_load_explicit(&g->conns_at_close, memory_order_relaxed));
    uint64_t cd = 0, cf = 0, rd = 0, rf = 0;
    for (uint32_t i = 0; i < srv->nloops; i++) {
        const ug__loop_report *r = &srv->loops[i]->report;
        cd += UG_GAUGE_GET(r->conns_drained);
        cf += UG_GAUGE_GET(r->conns_forced);
        rd += UG_GAUGE_GET(r->requests_drained);
        rf += UG_GAUGE_GET(r->requests_forced);
    }
    family(o, "drain_connections_drained_total", "counter",
           "Connections that ended by themselves after the gate closed.");
    put(o, "ugate_drain_connections_drained_total %llu\n", (unsigned long long)cd);
    family(o, "drain_connections_forced_total", "counter",
           "Connections the drain deadline (or an immediate shutdown) closed.");
    put(o, "ugate_drain_connections_forced_total %llu\n", (unsigned long long)cf);
    family(o, "drain_requests_drained_total", "counter",
           "Requests answered after the gate closed.");
    put(o, "ugate_drain_requests_drained_total %llu\n", (unsigned long long)rd);
    family(o, "drain_requests_forced_total", "counter",
           "Requests the drain deadline cancelled unanswered.");
    put(o, "ugate_drain_requests_forced_total %llu\n", (unsigned long long)rf);
    family(o, "drain_holds_forced_total", "counter", "Holds the drain deadline dropped.");
    put(o, "ugate_drain_holds_forced_total %llu\n",
        (unsigned long long)UG_GAUGE_GET(srv->report.holds_forced));
}

int ug_server_metrics(const ug_server *srv, char *buf, size_t cap) {
    if (!srv || !buf || !cap) return -EINVAL;
    metrics_out o = {buf, cap, 0, 0};
    ug_stats st;
    ug_server_stats(srv, &st);
#define EMIT(field, kind, metric, help)                                                            \
    family(&o, #metric SUFFIX_##kind, TYPE_##kind, help);                                          \
    put(&o, "ugate_%s %llu\n", #metric SUFFIX_##kind, (unsigned long long)st.field);
    UG_STATS_FIELDS(EMIT)
#undef EMIT
    family(&o, "responses_total", "counter", "Responses by status class.");
    for (int c = 1; c <= 5; c++)
        put(&o, "ugate_responses_total{class=\"%dxx\"} %llu\n", c,
            (unsigned long long)st.responses[c]);
    static const char *const states[] = {
        [UG_GATE_OPEN] = "open",
        [UG_GATE_LAME_DUCK] = "lame_duck",
        [UG_GATE_DRAINING] = "draining",
        [UG_GATE_CLOSED] = "closed",
    };
    ug_gate_state now = ug_server_state(srv);
    family(&o, "gate_state", "gauge", "The accept gate's state: 1 for the current one.");
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        put(&o, "ugate_gate_state{state=\"%s\"} %d\n", states[i], (ug_gate_state)i == now);
    family(&o, "loops", "gauge", "Event loops (threads) of the server.");
    put(&o, "ugate_loops %u\n", ug_server_loops(srv));
    loop_metrics(srv, &o);
    drain_metrics(srv, &o);
    if (o.overflow) {
        buf[0] = '\0';
        return -ENOSPC;
    }
    return (int)o.len;
}
