/* The live view (ug_server_debug_json): the gate and the drain from the server's atomics,
 * then each loop's connections written by that loop itself, on its thread (a post), so
 * nothing of a connection is read while its loop changes it. Each loop writes its part into
 * a buffer of its own, without the job's lock, and takes the lock only to hand it over; the
 * caller waits for one loop after the other, until its timeout. A loop that does not answer
 * in time is abandoned: the job is refcounted, so a post that runs late finds it still
 * allocated, sees that nobody waits, and only drops its reference. */
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#define DEFAULT_TIMEOUT_MS 1000u
/* The request target shown in an entry, at most (longer ones end in "..."). */
#define TARGET_SHOWN_MAX 256u
/* A first buffer for a loop's part; it doubles as needed. */
#define PART_FIRST_CAP 4096u

/* Text that grows as it is written (the dump's size follows the connections). */
typedef struct dyn {
    char *p;
    size_t len, cap;
    int failed; /* out of memory: sticky */
} dyn;

/* Room for n more bytes and a NUL: 0, or -1 (sticky failure) when memory runs out. */
static int grow(dyn *d, size_t n) {
    if (d->failed) return -1;
    if (d->cap - d->len > n) return 0;
    size_t cap = d->cap ? d->cap : PART_FIRST_CAP;
    while (cap - d->len <= n) cap *= 2;
    char *grown = ug__realloc(d->p, cap);
    if (!grown) {
        d->failed = 1;
        return -1;
    }
    d->p = grown;
    d->cap = cap;
    return 0;
}

static void put_bytes(dyn *d, const char *p, size_t n) {
    if (grow(d, n)) return;
    memcpy(d->p + d->len, p, n);
    d->len += n;
    d->p[d->len] = '\0';
}

__attribute__((format(printf, 2, 3))) static void put(dyn *d, const char *fmt, ...) {
    for (int pass = 0; pass < 2 && !d->failed; pass++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(d->p ? d->p + d->len : NULL, d->cap - d->len, fmt, ap);
        va_end(ap);
        if (n < 0) break;
        if ((size_t)n < d->cap - d->len) {
            d->len += (size_t)n;
            return;
        }
        if (grow(d, (size_t)n)) return;
    }
    d->failed = 1;
}

typedef struct loop_summary {
    int answered; /* its part was handed over (else: it had not started, or had ended) */
    int started;  /* as collect saw it: "not_started" or "ended" when it did not answer */
    uint32_t conns, deferred;
    uint8_t phase;
    uint64_t oldest_deferred_ms;
} loop_summary;

typedef struct dump_job dump_job;
typedef struct dump_part {
    dump_job *job;
    uint32_t loop;
    dyn text; /* the loop's connection entries, once handed over */
} dump_part;

struct dump_job {
    _Atomic int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int abandoned; /* the caller gave up waiting */
    uint32_t done; /* loops that have handed their part over */
    struct {
        uint32_t n[UG_VIEW_COUNT];
    } views; /* connections by view, summed over the loops that answered */
    loop_summary loops[UG_MAX_LOOPS];
    dump_part parts[UG_MAX_LOOPS];
};

static void job_unref(dump_job *job) {
    if (atomic_fetch_sub(&job->refs, 1) != 1) return;
    pthread_mutex_destroy(&job->mu);
    pthread_cond_destroy(&job->cv);
    for (uint32_t i = 0; i < UG_MAX_LOOPS; i++) free(job->parts[i].text.p);
    free(job);
}

/* A JSON string from bytes that may be anything: quotes, backslashes, controls and every
 * byte past ASCII escaped (a target is not necessarily UTF-8). */
static void put_json_str(dyn *o, const char *s, size_t n, size_t max) {
    put(o, "\"");
    for (size_t i = 0; i < n && i < max && !o->failed; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            put(o, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            put(o, "\\u%04x", ch);
        else
            put(o, "%c", ch);
    }
    put(o, n > max ? "...\"" : "\"");
}

static void put_peer(dyn *o, int fd) {
    struct sockaddr_storage ss;
    uint32_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN];
    if (ug__sock_peer(fd, &ss, &len) != 0) {
        put(o, "null"); /* the client is already gone */
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        put(o, "\"[%s]:%u\"", host, ntohs(a->sin6_port));
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        put(o, "\"%s:%u\"", host, ntohs(a->sin_port));
    } else {
        put(o, "null");
    }
}

static const char *const view_names[UG_VIEW_COUNT] = UG__VIEW_NAMES;

static void put_conn(dyn *o, const ug__loop *lp, const ug__conn *c) {
    uint64_t now = lp->now_ms;
    put(o, "{\"id\":%llu,\"loop\":%u,\"slot\":%u,\"peer\":", (unsigned long long)ug__conn_id(lp, c),
        lp->index, ug__conn_idx(lp, c));
    put_peer(o, c->fd);
    put(o,
        ",\"state\":\"%s\",\"age_ms\":%llu,\"idle_ms\":%llu,\"bytes_in\":%llu,"
        "\"bytes_out\":%llu,\"requests\":%u",
        view_names[c->view], (unsigned long long)(now - c->t_open_ms),
        (unsigned long long)(now - c->t_active_ms), (unsigned long long)c->bytes_in,
        (unsigned long long)c->bytes_out, c->requests);
    const struct ug_request *r = c->ctx;
    if (ug__request_live(r)) {
        ug_str m = ug_req_method(r), t = ug_req_target(r);
        put(o, ",\"request\":{\"id\":%llu,\"method\":", (unsigned long long)r->id);
        put_json_str(o, m.ptr, m.len, TARGET_SHOWN_MAX);
        put(o, ",\"target\":");
        put_json_str(o, t.ptr, t.len, TARGET_SHOWN_MAX);
        put(o, ",\"age_ms\":%llu,\"deferred\":%s,\"streaming\":%s,\"cancel_callback\":%s}",
            (unsigned long long)(now - r->t_dispatch_ms),
            r->rstate == UG_RS_DEFERRED ? "true" : "false",
            r->rstate == UG_RS_STREAMING ? "true" : "false", r->cancel_fn ? "true" : "false");
    }
    put(o, "}");
}

/* On the loop's thread: its part, written outside the job's lock (so the caller's timeout
 * holds however many connections there are), then handed over. */
static void dump_loop(ug_server *srv, void *arg) {
    dump_part *part = arg;
    dump_job *job = part->job;
    const ug__loop *lp = srv->loops[part->loop];
    pthread_mutex_lock(&job->mu);
    int abandoned = job->abandoned;
    pthread_mutex_unlock(&job->mu);
    if (abandoned) {
        job_unref(job);
        return;
    }
    loop_summary sum = {
        .answered = 1,
        .conns = lp->conns_open,
        .deferred = lp->views[UG_VIEW_HANDLER],
        .phase = lp->phase,
        .oldest_deferred_ms = lp->t_oldest_deferred_ms ? lp->now_ms - lp->t_oldest_deferred_ms : 0,
    };
    dyn text = {0};
    int shown = 0;
    for (uint32_t i = 0; i < lp->slots_used && !text.failed; i++) {
        const ug__conn *c = &lp->slots[i];
        if (c->state == UG_CONN_FREE) continue;
        if (shown++) put(&text, ",");
        put_conn(&text, lp, c);
    }
    pthread_mutex_lock(&job->mu);
    if (!job->abandoned) {
        job->loops[part->loop] = sum;
        part->text = text;
        text.p = NULL;
        for (int v = 0; v < UG_VIEW_COUNT; v++) job->views.n[v] += lp->views[v];
        job->done = part->loop + 1;
        pthread_cond_signal(&job->cv);
    }
    pthread_mutex_unlock(&job->mu);
    free(text.p); /* nobody waited for it */
    job_unref(job);
}

static dump_job *job_new(void) {
    dump_job *job = ug__calloc(1, sizeof *job);
    if (!job) return NULL;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca)) goto fail;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&job->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc) goto fail;
    pthread_mutex_init(&job->mu, NULL);
    atomic_init(&job->refs, 1);
    return job;
fail:
    free(job);
    return NULL;
}

/* Post to loop i and wait for its part until the deadline: 0, 1 if the loop has not started
 * or has ended (it has no part), -ETIMEDOUT or -ENOMEM. */
static int collect(ug_server *srv, dump_job *job, uint32_t i, const struct timespec *until) {
    /* A loop that has not started would run the post only when it starts, if ever. */
    job->loops[i].started = atomic_load_explicit(&srv->loops[i]->started, memory_order_acquire);
    if (!job->loops[i].started) return 1;
    job->parts[i] = (dump_part){job, i, {0}};
    atomic_fetch_add(&job->refs, 1);
    int rc = ug__loop_post(srv->loops[i], dump_loop, &job->parts[i]);
    if (rc) {
        atomic_fetch_sub(&job->refs, 1); /* the caller still holds one: never the last */
        return rc == -ESHUTDOWN ? 1 : rc;
    }
    pthread_mutex_lock(&job->mu);
    while (job->done != i + 1 && rc == 0) rc = -pthread_cond_timedwait(&job->cv, &job->mu, until);
    if (job->done == i + 1) rc = 0;
    if (rc) job->abandoned = 1;
    pthread_mutex_unlock(&job->mu);
    return rc;
}

static const char *const gate_names[] = {
    [UG_GATE_OPEN] = "open",
    [UG_GATE_LAME_DUCK] = "lame_duck",
    [UG_GATE_DRAINING] = "draining",
    [UG_GATE_CLOSED] = "closed",
};
static const char *const phase_names[] = {
    [UG_LOOP_RUNNING] = "running",
    [UG_LOOP_DRAINING] = "draining",
    [UG_LOOP_FORCED] = "forced",
};

static void put_holds(dyn *o, ug_server *srv) {
    ug__gate *g = &srv->gate;
    pthread_mutex_lock(&g->labels_mu);
    uint32_t total = atomic_load(&g->holds) & ~UG_HOLDS_DROPPED, labelled = 0;
    put(o, "\"holds\":{\"outstanding\":%u,\"labels\":{", total);
    int n = 0;
    for (unsigned i = 0; i < UG_HOLD_LABELS_MAX; i++) {
        const ug__hold_label *l = &g->labels[i];
        if (!l->count) continue;
        if (n++) put(o, ",");
        put_json_str(o, l->name, strlen(l->name), UG_HOLD_LABEL_MAX);
        put(o, ":%u", l->count);
        labelled += l->count;
    }
    pthread_mutex_unlock(&g->labels_mu);
    put(o, "},\"unlabelled\":%u}", total > labelled ? total - labelled : 0);
}

static void put_gate(dyn *o, ug_server *srv, const dump_job *job) {
    const ug__gate *g = &srv->gate;
    uint64_t now = ug__clock_ns();
    uint64_t close_ns = atomic_load(&g->close_ns), end_ns = atomic_load(&g->end_ns);
    uint64_t deadline_ns = atomic_load(&g->deadline_ns);
    int forcing = ug__gate_forcing(srv);
    put(o, "{\"gate\":{\"state\":\"%s\",\"loops\":%u,", gate_names[ug_server_state(srv)],
        srv->nloops);
    put_holds(o, srv);
    put(o, ",\"connections\":{");
    for (int v = UG_VIEW_NONE + 1; v < UG_VIEW_COUNT; v++)
        put(o, "%s\"%s\":%u", v > UG_VIEW_NONE + 1 ? "," : "", view_names[v], job->views.n[v]);
    put(o, "}");
    if (close_ns) {
        uint64_t until = end_ns ? end_ns : now;
        int live = !end_ns && !forcing && deadline_ns > now;
        put(o,
            ",\"drain\":{\"elapsed_ms\":%llu,\"deadline_in_ms\":%llu,\"forcing\":%s,"
            "\"connections_at_close\":%llu}",
            (unsigned long long)(until > close_ns ? (until - close_ns) / 1000000u : 0),
            (unsigned long long)(live ? (deadline_ns - now) / 1000000u : 0),
            forcing ? "true" : "false", (unsigned long long)atomic_load(&g->conns_at_close));
    }
    put(o, "},\"stats\":{");
    ug_stats st;
    ug_server_stats(srv, &st);
    /* The same table as ug_stats and the exposition: a new counter shows here too. */
    const char *sep = "";
#define PUT_STAT(field, kind, metric, help)                                                        \
    put(o, "%s\"" #field "\":%llu", sep, (unsigned long long)st.field);                            \
    sep = ",";
    UG_STATS_FIELDS(PUT_STAT)
#undef PUT_STAT
    put(o, "},\"loops\":[");
    for (uint32_t i = 0; i < srv->nloops; i++) {
        const loop_summary *l = &job->loops[i];
        if (i) put(o, ",");
        if (!l->answered) {
            put(o, "{\"loop\":%u,\"%s\":true}", i, l->started ? "ended" : "not_started");
            continue;
        }
        put(o,
            "{\"loop\":%u,\"phase\":\"%s\",\"connections\":%u,\"deferred\":%u,"
            "\"oldest_deferred_ms\":%llu}",
            i, phase_names[l->phase], l->conns, l->deferred,
            (unsigned long long)l->oldest_deferred_ms);
    }
    put(o, "],\"connections\":[");
}

int ug_server_debug_json(ug_server *srv, uint32_t timeout_ms, char **out, size_t *len) {
    if (!srv || !out) return -EINVAL;
    *out = NULL;
    if (len) *len = 0;
    if (ug__loop_thread_server == srv) return -EDEADLK;
    dump_job *job = job_new();
    if (!job) return -ENOMEM;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    uint64_t ns = (uint64_t)until.tv_nsec +
                  (uint64_t)(timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS) * 1000000u;
    until.tv_sec += (time_t)(ns / 1000000000u);
    until.tv_nsec = (long)(ns % 1000000000u);
    int rc = 0;
    for (uint32_t i = 0; i < srv->nloops && rc >= 0; i++) rc = collect(srv, job, i, &until);
    if (rc >= 0) {
        /* Every post has run or failed: nobody else touches the parts handed over. */
        dyn o = {0};
        put_gate(&o, srv, job);
        int shown = 0;
        for (uint32_t i = 0; i < srv->nloops; i++) {
            const dyn *t = &job->parts[i].text;
            if (t->failed) o.failed = 1;
            if (!t->len) continue;
            if (shown++) put(&o, ",");
            put_bytes(&o, t->p, t->len);
        }
        put(&o, "]}");
        if (o.failed) {
            free(o.p);
            rc = -ENOMEM;
        } else {
            *out = o.p;
            if (len) *len = o.len;
            rc = 0;
        }
    }
    job_unref(job);
    return rc;
}
