/* ugate-serve's process lifecycle: systemd socket activation and sd_notify, the pid file, and
 * the in-place upgrade on SIGUSR2 (tools/serve_lifecycle.c). Not part of the library: ugate
 * itself knows nothing of systemd. */
#ifndef UGATE_SERVE_LIFECYCLE_H
#define UGATE_SERVE_LIFECYCLE_H

#include <stdint.h>
#include <ugate.h>

typedef struct lc_opts {
    const char *pid_file;        /* NULL: none */
    uint32_t upgrade_timeout_ms; /* how long a successor has to report it is accepting */
    uint32_t drain_timeout_ms;   /* the drain after a hand-off to a successor */
    char **argv;                 /* this process's arguments: the successor gets the same */
} lc_opts;

/* At start, before anything else reads the environment: resolve the executable's path (the
 * successor is whatever is at that path then) and take an inherited listening socket, from
 * systemd (LISTEN_PID / LISTEN_FDS, the variables then cleared) or from a predecessor.
 * Returns the descriptor or -1; *shared is set when another process (systemd) holds the
 * socket too, so that every shutdown must hand it off. */
int lc_init(char **argv, int *shared);

/* After ug_server_create and the routes, before ug_server_run: report readiness once the
 * accept is armed (sd_notify READY=1, the pid file, a predecessor's readiness pipe),
 * STOPPING=1 when the gate closes, the drain's progress while it runs; and start the thread
 * that performs upgrades. 0 or -errno. */
int lc_start(ug_server *srv, const lc_opts *opts);

/* SIGUSR2's handler: ask for an upgrade. Async-signal-safe. */
void lc_request_upgrade(void);

/* After ug_server_run: stop the thread; remove the pid file unless a successor took over.
 * Returns 1 if this process handed over to a successor. */
int lc_finish(void);

#endif
