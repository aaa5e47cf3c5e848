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
} srv_ctx;

extern ug_backend_kind g_backend;

/* Routes: GET / (hello), POST /echo, any /path... (echoes the target), GET /forget (returns
 * without responding), GET /late?ms=N (responds "late" from a timer, counts cancels),
 * GET /big (4 MiB streamed). cfg may be NULL (defaults); port and backend are set here. */
void ts_start(srv_ctx *sc, ug_config *cfg);
/* Graceful shutdown with a 5 s deadline, join, check CLOSED and accepted_after_close == 0,
 * free. */
void ts_stop(srv_ctx *sc);
/* Join the loop thread (after a shutdown requested elsewhere); does not free. */
void ts_join(srv_ctx *sc);
/* Parse argv: "epoll" selects the epoll backend, otherwise io_uring (skipping if refused).
 * Raises RLIMIT_NOFILE to its hard limit. */
void ts_init(int argc, char **argv);

#endif
