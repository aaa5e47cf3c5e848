/* The server: create and free, registration before the run, the run itself (a thread per
 * loop beyond loop 0, which runs on the caller's), the report and the counters summed over
 * the loops. */
#include "core.h"

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

void ug__log(const ug_server *srv, ug_log_level lvl, const char *fmt, ...) {
    if (!srv->cfg.log && lvl > UG_LOG_WARN) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (srv->cfg.log)
        srv->cfg.log(srv->cfg.log_user, lvl, msg);
    else
        fprintf(stderr, "ugate: %s\n", msg);
}

/* ---------------------------------------------------------------- create / free ---- */

static char *dup_or_null(const char *s) {
    return s ? ug__strdup(s) : NULL;
}

/* The backend every loop uses: the one asked for, or with AUTO io_uring where the kernel
 * allows it, else epoll (decided once, by loop 0's creation). */
static int create_loops(ug_server *srv, const ug__backend_ops *ops) {
    const ug_config *cfg = &srv->cfg;
    int rc;
    if (ops) {
        rc = ug__loop_create(srv, 0, ops, &srv->loops[0]);
    } else if (cfg->backend == UG_BACKEND_EPOLL) {
        ops = &ug__backend_epoll;
        rc = ug__loop_create(srv, 0, ops, &srv->loops[0]);
    } else {
        ops = &ug__backend_uring;
        rc = ug__loop_create(srv, 0, ops, &srv->loops[0]);
        if (rc && rc != -ENOMEM && cfg->backend == UG_BACKEND_AUTO) {
            ug__log(srv, UG_LOG_WARN, "io_uring unavailable (%s): using epoll", strerror(-rc));
            ops = &ug__backend_epoll;
            rc = ug__loop_create(srv, 0, ops, &srv->loops[0]);
        }
    }
    if (rc) return rc;
    srv->be_ops = ops;
    for (uint32_t i = 1; i < srv->nloops; i++)
        if ((rc = ug__loop_create(srv, i, ops, &srv->loops[i])) != 0) return rc;
    return 0;
}

int ug_server_create(ug_server **out, const ug_config *cfg_in) {
    return ug__server_create_ops(out, cfg_in, NULL);
}

int ug__server_create_ops(ug_server **out, const ug_config *cfg_in, const ug__backend_ops *ops) {
    if (!out) return -EINVAL;
    *out = NULL;
    ug_config cfg;
    int rc = ug__config_resolve(cfg_in, &cfg);
    if (rc) return rc;
    ug_server *srv = ug__calloc(1, sizeof *srv);
    if (!srv) return -ENOMEM;
    srv->cfg = cfg;
    srv->nloops = cfg.threads;
    srv->listener.fd = -1;
    srv->gate.labels_mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    srv->host_copy = ug__strdup(cfg.host);
    srv->server_name_copy = dup_or_null(cfg.server_name);
    srv->cfg.host = srv->host_copy;
    srv->cfg.server_name = srv->server_name_copy;
    srv->limits.max_header_bytes = cfg.max_header_bytes;
    srv->limits.max_headers = cfg.max_headers;
    srv->limits.max_uri_bytes = cfg.max_uri_bytes;
    srv->limits.max_body_bytes = cfg.max_body_bytes;
    /* Generated request ids: this prefix keeps them apart from another server's. */
    if (getrandom(&srv->rid_prefix, sizeof srv->rid_prefix, GRND_NONBLOCK) !=
        (ssize_t)sizeof srv->rid_prefix)
        srv->rid_prefix = ug__clock_ns() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)srv;
    rc = -ENOMEM;
    if (!srv->host_copy || (cfg.server_name && !srv->server_name_copy)) goto fail;
    if ((rc = create_loops(srv, ops)) != 0) goto fail;
    if ((rc = ug__gate_init(srv)) != 0) goto fail;
    if ((rc = ug__listener_open(srv)) != 0) goto fail;
    *out = srv;
    return 0;
fail:
    /* A failed create leaves cfg.listen_fd to the caller, open, whatever failed. */
    if (cfg.listen_fd >= 0 && srv->listener.fd == cfg.listen_fd) srv->listener.fd = -1;
    ug_server_free(srv);
    return rc;
}

void ug_server_free(ug_server *srv) {
    if (!srv) return;
    for (uint32_t i = 0; i < srv->nloops; i++) ug__loop_destroy(srv->loops[i]);
    ug__listener_close_fd(srv);
    ug__router_free(&srv->router);
    ug__chain_free(srv);
    free(srv->hooks);
    free(srv->conn_hooks);
    free(srv->done_hooks);
    pthread_mutex_destroy(&srv->gate.labels_mu);
    free(srv->host_copy);
    free(srv->server_name_copy);
    free(srv);
}

uint16_t ug_server_port(const ug_server *srv) {
    return srv->listener.port;
}

const char *ug_server_backend(const ug_server *srv) {
    return srv->be_ops->name;
}

unsigned ug_server_loops(const ug_server *srv) {
    return srv->nloops;
}

uint32_t ug_server_conn_slots(const ug_server *srv) {
    return srv->loops[0]->nslots;
}

/* ---------------------------------------------------------------- registration ---- */

int ug_route(ug_server *srv, const char *method, const char *path, unsigned flags,
             ug_handler_fn handler, void *user) {
    if (!srv || !path || path[0] != '/' || !handler ||
        (flags & ~(UG_ROUTE_PREFIX | UG_ROUTE_STREAM_BODY)))
        return -EINVAL;
    if (srv->running) return -EBUSY;
    return ug__router_add(&srv->router, method, path, flags, handler, user);
}

int ug_route_body_limit(ug_server *srv, const char *method, const char *path, uint64_t max_bytes) {
    if (!srv || !path) return -EINVAL;
    if (srv->running) return -EBUSY;
    ug__route *r = ug__router_get(&srv->router, method, path);
    if (!r) return -ENOENT;
    if (!(r->flags & UG_ROUTE_STREAM_BODY) && max_bytes > UG__BUFFERED_BODY_MAX) return -EINVAL;
    r->max_body = max_bytes;
    return 0;
}

/* Append one {fn, user} entry of size bytes to a hook array (*v, *n). */
static int add_hook(ug_server *srv, void **v, size_t *n, const void *entry, size_t size) {
    if (srv->running) return -EBUSY;
    char *grown = ug__realloc(*v, (*n + 1) * size);
    if (!grown) return -ENOMEM;
    memcpy(grown + *n * size, entry, size);
    *v = grown;
    (*n)++;
    return 0;
}

int ug_server_on_shutdown(ug_server *srv, ug_shutdown_hook_fn fn, void *user) {
    if (!srv || !fn) return -EINVAL;
    ug__hook h = {fn, user};
    return add_hook(srv, (void **)&srv->hooks, &srv->nhooks, &h, sizeof h);
}

int ug_server_on_conn_state(ug_server *srv, ug_conn_state_fn fn, void *user) {
    if (!srv || !fn) return -EINVAL;
    ug__conn_hook h = {fn, user};
    return add_hook(srv, (void **)&srv->conn_hooks, &srv->nconn_hooks, &h, sizeof h);
}

void ug__server_unhook(ug_server *srv, const void *user) {
    size_t k = 0;
    for (size_t i = 0; i < srv->nconn_hooks; i++)
        if (srv->conn_hooks[i].user != user) srv->conn_hooks[k++] = srv->conn_hooks[i];
    srv->nconn_hooks = k;
    k = 0;
    for (size_t i = 0; i < srv->ndone_hooks; i++)
        if (srv->done_hooks[i].user != user) srv->done_hooks[k++] = srv->done_hooks[i];
    srv->ndone_hooks = k;
}

int ug_server_on_complete(ug_server *srv, ug_completion_fn fn, void *user) {
    if (!srv || !fn) return -EINVAL;
    ug__done_hook h = {fn, user};
    return add_hook(srv, (void **)&srv->done_hooks, &srv->ndone_hooks, &h, sizeof h);
}

/* ---------------------------------------------------------------- posts ---- */

int ug_server_post(ug_server *srv, ug_post_fn fn, void *user) {
    return ug_server_post_loop(srv, 0, fn, user);
}

int ug_server_post_loop(ug_server *srv, unsigned loop, ug_post_fn fn, void *user) {
    if (!srv || !fn || loop >= srv->nloops) return -EINVAL;
    return ug__loop_post(srv->loops[loop], fn, user);
}

/* ---------------------------------------------------------------- run ---- */

/* The i-th CPU of the process's affinity mask (wrapping around). */
static void pin(ug_server *srv, pthread_t thr, uint32_t i) {
    cpu_set_t all, one;
    if (sched_getaffinity(0, sizeof all, &all) != 0 || CPU_COUNT(&all) == 0) return;
    uint32_t k = i % (uint32_t)CPU_COUNT(&all);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &all) || k--) continue;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        int rc = pthread_setaffinity_np(thr, sizeof one, &one);
        if (rc)
            ug__log(srv, UG_LOG_WARN, "loop %u: cannot pin to CPU %d: %s", i, cpu, strerror(rc));
        return;
    }
}

static void *loop_thread(void *arg) {
    ug__loop *lp = arg;
    ug__loop_run(lp);
    atomic_store_explicit(&lp->ended, 1, memory_order_release);
    return NULL;
}

static void sum_report(ug_server *srv, ug_report *rep) {
    *rep = srv->report;
    for (uint32_t i = 0; i < srv->nloops; i++) {
        const ug__loop_report *r = &srv->loops[i]->report;
        rep->conns_drained += r->conns_drained;
        rep->conns_forced += r->conns_forced;
        rep->requests_drained += r->requests_drained;
        rep->requests_forced += r->requests_forced;
    }
}

int ug_server_run(ug_server *srv, ug_report *report) {
    if (!srv) return -EINVAL;
    if (srv->running) return -EBUSY;
    srv->running = 1;
    int rc = 0;
    uint32_t started = 1;
    /* Loops 1..n-1 first: loop 0 hands connections only to loops that run. */
    for (; started < srv->nloops; started++) {
        ug__loop *lp = srv->loops[started];
        int e = pthread_create(&lp->thread, NULL, loop_thread, lp);
        if (e) {
            ug__log(srv, UG_LOG_ERROR, "cannot start loop %u: %s", started, strerror(e));
            rc = -e;
            break;
        }
        lp->thread_started = 1;
        if (srv->cfg.pin_cpus) pin(srv, lp->thread, started);
    }
    for (uint32_t i = started; i < srv->nloops; i++)
        atomic_store_explicit(&srv->loops[i]->ended, 1, memory_order_release);
    /* Nothing was accepted yet: stop the loops that started, as a failed loop would; loop 0
     * still runs, to its end at once, so that what was posted to it runs. */
    if (rc) ug__gate_loop_failed(srv->loops[0]);
    if (srv->cfg.pin_cpus && !rc) pin(srv, pthread_self(), 0);
    int r0 = ug__loop_run(srv->loops[0]);
    atomic_store_explicit(&srv->loops[0]->ended, 1, memory_order_release);
    if (r0 < 0 && !rc) rc = r0;
    int forced = 0;
    uint64_t end_ms = 0;
    for (uint32_t i = 0; i < srv->nloops; i++) {
        ug__loop *lp = srv->loops[i];
        if (lp->thread_started) pthread_join(lp->thread, NULL);
        if (lp->rc < 0 && !rc) rc = lp->rc;
        /* Handed to a loop that failed before taking them: closed now, not at free. */
        uint32_t untaken = ug__loop_close_inbox(lp);
        if (untaken) {
            UG_GAUGE_ADD(lp->report.conns_forced, untaken);
            forced = 1;
        }
        forced |= lp->forced;
        if (lp->now_ms > end_ms) end_ms = lp->now_ms; /* each loop reads the clock as it ends */
    }
    /* Loop 0 may have ended long before the last loop: the drain ends with the last. */
    if (srv->gate.t_close_ms) srv->report.drain_us = (end_ms - srv->gate.t_close_ms) * 1000u;
    atomic_store(&srv->gate.end_ns, ug__clock_ns());
    srv->running = 2; /* the hooks are not called again (ug_server_free cancels nothing) */
    ug_report rep;
    sum_report(srv, &rep);
    atomic_store_explicit(&srv->gate.state, UG_GATE_CLOSED, memory_order_release);
    ug__log(srv, UG_LOG_INFO,
            "closed: %llu connection(s) and %llu request(s) drained, %llu connection(s) and "
            "%llu request(s) forced, in %llu ms",
            (unsigned long long)rep.conns_drained, (unsigned long long)rep.requests_drained,
            (unsigned long long)rep.conns_forced, (unsigned long long)rep.requests_forced,
            (unsigned long long)(rep.drain_us / 1000u));
    if (report) *report = rep;
    if (rc < 0) return rc;
    return forced || rep.holds_forced ? 1 : 0;
}

/* ---------------------------------------------------------------- counters ---- */

static void add_loop_stats(const ug__loop *lp, ug_stats *out) {
    uint64_t *sum = (uint64_t *)out;
    const uint64_t *v = (const uint64_t *)&lp->stats;
    for (size_t k = 0; k < sizeof(ug_stats) / sizeof(uint64_t); k++)
        sum[k] += __atomic_load_n(&v[k], __ATOMIC_RELAXED);
    out->conns_open += ug__loop_conns(lp);
    out->inflight += __atomic_load_n(&lp->inflight, __ATOMIC_RELAXED);
}

void ug_server_stats(const ug_server *srv, ug_stats *out) {
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < srv->nloops; i++) add_loop_stats(srv->loops[i], out);
}

int ug_server_loop_stats(const ug_server *srv, unsigned loop, ug_stats *out) {
    if (!srv || !out || loop >= srv->nloops) return -EINVAL;
    memset(out, 0, sizeof *out);
    add_loop_stats(srv->loops[loop], out);
    return 0;
}
