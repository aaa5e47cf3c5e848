/* The in-process server the end-to-end suites run against: the demo routes plus test
 * routes, on a loop thread, on the backend chosen on the command line. */
#ifndef UG_TESTSERVER_H
#define UG_TESTSERVER_H

#include <pthread.h>
#include <ugate.h>

typedef struct srv_ctx {
    ug_server *srv;
    pthread_t thr;
    uint16_t port;
    int run_rc;
    ug_report report;
    ug_stats stats; /* read on the loop thread after the run returns */
    int cancelled;  /* cancel callbacks seen (atomic) */
    ug_cancel_reason last_reason;
    /* GET /late-id: the id of the last request it took, and its cancels by reason (atomic) */
    uint64_t last_id;
    int cancel_by_reason[8];
} srv_ctx;

extern ug_backend_kind g_backend;
extern unsigned g_threads; /* loops per server: the suites run with 1 and with 2 */

/* Routes: GET / (hello), POST /echo, any /path... (echoes the target), GET /forget (returns
 * without responding), GET /late?ms=N (responds "late" from a timer, counts cancels),
 * GET /big (4 MiB streamed), GET /late-id[?ms=N] (defers, stores its id in last_id, records
 * cancels by reason; answers "late" after ms if given, else waits for an answer found with
 * ug_req_find, e.g. from ts_on_loop), GET /block?ms=N (blocks the loop thread N ms, on
 * purpose). cfg may be NULL (defaults); port and backend are set
 * here. */
void ts_start(srv_ctx *sc, ug_config *cfg);
/* ts_start in two steps: create (and route), so that hooks can be registered, then run. */
void ts_create(srv_ctx *sc, ug_config *cfg);
void ts_run(srv_ctx *sc);
/* Graceful shutdown with a 5 s deadline, join, check CLOSED and accepted_after_close == 0,
 * free. ts_drain: the same without the free. */
void ts_stop(srv_ctx *sc);
void ts_drain(srv_ctx *sc);
/* Join the loop thread (after a shutdown requested elsewhere); does not free. */
void ts_join(srv_ctx *sc);
/* Parse argv: "epoll" selects the epoll backend, otherwise io_uring (skipping if refused);
 * a second argument is the number of loops (1 by default). Raises RLIMIT_NOFILE to its hard
 * limit. */
void ts_init(int argc, char **argv);
/* Run fn(srv, user) on the loop thread (ug_server_post) and wait until it has run. The server
 * must be running. Returns 0 or the post's error. */
int ts_on_loop(srv_ctx *sc, ug_post_fn fn, void *user);
/* The same on the given loop; on the loop that owns request id (ug_req_find needs it). */
int ts_on_loop_n(srv_ctx *sc, unsigned loop, ug_post_fn fn, void *user);
int ts_on_req_loop(srv_ctx *sc, uint64_t id, ug_post_fn fn, void *user);
/* The server's counters now, read on the loop thread. */
int ts_stats_now(srv_ctx *sc, ug_stats *out);

#endif
