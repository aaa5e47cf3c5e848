/* The Prometheus text exposition (format 0.0.4) of the server's counters: generated from
 * UG_STATS_FIELDS, summed over the loops while they run. */
#include "core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

typedef struct metrics_out {
    char *p;
    size_t cap, len;
    int overflow;
} metrics_out;

__attribute__((format(printf, 2, 3))) static void put(metrics_out *o, const char *fmt, ...) {
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
    if (o.overflow) {
        buf[0] = '\0';
        return -ENOSPC;
    }
    return (int)o.len;
}
