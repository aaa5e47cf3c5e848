/* ugate-serve's process lifecycle: systemd socket activation and sd_notify, the pid file, and
 * the in-place upgrade on SIGUSR2 (tools/serve_lifecycle.c). Not part of the library: ugate
 * itself knows nothing of systemd. */
#ifndef UGATE_SERVE_LIFECYCLE_H
#define UGATE_SERVE_LIFECYCLE_H

#include <stdint.h>
#include <ugate.h>

typedef struct lc_opts {
    const char *pid_file;         /* NULL: none */
    uint32_t upgrade_timeout_ms;  /* how long a successor has to report it is accepting */
    uint32_t drain_timeout_ms;    /* the drain after a hand-off to a successor */
    char **argv;                  /* this process's arguments: the successor gets the same */
    ug_server *admin;             /* its socket goes to the successor too (NULL: none) */
    const ug_shutdown_opts *stop; /* what a SIGTERM during an upgrade does, once it is undone */
} lc_opts;

/* The sockets a process starts with, from systemd (LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES)
 * or from a predecessor (the same protocol): -1 where there is none. */
typedef struct lc_sockets {
    int http, admin; /* the first socket not named "admin", and the one named "admin" */
    int shared;      /* another process (systemd) holds them too: every stop hands them off */
} lc_sockets;

/* At start, before anything else reads the environment: resolve the executable's path (the
 * successor is whatever is at that path then) and take the inherited sockets (the
 * variables are then cleared, for children). */
void lc_init(char **argv, lc_sockets *out);

/* After ug_server_create, the routes and the admin server, before ug_server_run: report
 * readiness once the accept is armed (sd_notify READY=1, the pid file, a predecessor's
 * readiness pipe), STOPPING=1 when the gate closes, the drain's progress while it runs; and
 * start the thread that performs upgrades. 0 or -errno. */
int lc_start(ug_server *srv, const lc_opts *opts);

/* Signal handlers. SIGUSR2: ask for an upgrade. SIGTERM / SIGINT: returns 1 if an upgrade
 * is under way and the supervisor will stop the server once it is undone (immediate: a
 * second SIGINT), 0 if the caller shuts down itself. Async-signal-safe. */
void lc_request_upgrade(void);
int lc_request_stop(int immediate);

/* 1 once a successor has taken over (the admin server then hands its socket off too). Any
 * thread. */
int lc_upgraded(void);

/* After ug_server_run: stop the thread; remove the pid file unless a successor took over.
 * Returns lc_upgraded(). */
int lc_finish(void);

#endif
