/* ugate-serve's process lifecycle (serve_lifecycle.h).
 *
 * Socket activation follows sd_listen_fds(3): LISTEN_PID must be this process and LISTEN_FDS
 * at least 1; the sockets start at descriptor 3 (SD_LISTEN_FDS_START); LISTEN_FDNAMES names
 * them. sd_notify(3) is one datagram to the AF_UNIX socket in NOTIFY_SOCKET ('@' for the
 * abstract namespace). Both are implemented here, as documented, rather than linking
 * libsystemd: the protocol is a few lines and ugate-serve then runs the same everywhere.
 *
 * The upgrade (SIGUSR2, as nginx): the supervisor thread forks and execs the executable now
 * at the path this process was started from, with the same arguments, handing it the
 * listening socket by the same protocol (descriptor 3, LISTEN_FDS=1, LISTEN_PID=its pid)
 * and a pipe (UGATE_READY_FD) on which it says once it is accepting. Then this process
 * closes its gate by hand-off (the socket stays open in the successor, its queue is the
 * successor's), drains and exits 0. A successor that exits or is not ready within the
 * timeout is killed, and this process goes on serving (the rollback).
 */
#include "serve_lifecycle.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LISTEN_FDS_START 3 /* SD_LISTEN_FDS_START */
#define CHILD_READY_FD 4   /* where a successor finds its readiness pipe */
#define PID_DIGITS 10      /* "LISTEN_PID=" is followed by this many digits, filled in the child */
#define PROGRESS_MS 1000   /* STATUS= and EXTEND_TIMEOUT_USEC= while draining */
#define EXTEND_MARGIN_US 5000000ull

extern char **environ;

static struct {
    char exe[PATH_MAX];
    char notify[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int shared;   /* systemd holds the socket too */
    int ready_fd; /* a predecessor waits on it, or -1 */
    ug_server *srv;
    lc_opts opts;
    int sig_pipe[2]; /* SIGUSR2 and the stop, to the supervisor */
    pthread_t thr;
    int thr_started;
    _Atomic int upgraded; /* a successor took over: no STOPPING=1, the pid file is its */
} lc = {.ready_fd = -1, .sig_pipe = {-1, -1}};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    /* the library's lines look the same (ugate-serve's log sink) */
    fprintf(stderr, "%02d:%02d:%02d.%03ld ugate-serve info: %s\n", tm.tm_hour, tm.tm_min,
            tm.tm_sec, ts.tv_nsec / 1000000, msg);
}

/* ---------------------------------------------------------------- sd_notify ---- */

static void notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void notify(const char *fmt, ...) {
    if (!lc.notify[0]) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof msg) return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(lc.notify);
    memcpy(sa.sun_path, lc.notify, len);
    if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0'; /* the abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        say("sd_notify: %s", strerror(errno));
    close(fd);
}

/* ---------------------------------------------------------------- the pid file ---- */

/* Written whole or not at all: a temporary file, then rename(2). */
static void write_pid_file(void) {
    const char *path = lc.opts.pid_file;
    if (!path) return;
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof tmp) return;
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        say("pid file %s: %s", path, strerror(errno));
        unlink(tmp);
    }
}

/* Removed at a final exit, if it is still ours. */
static void remove_pid_file(void) {
    const char *path = lc.opts.pid_file;
    if (!path) return;
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (!f) return;
    if (fscanf(f, "%d", &pid) != 1) pid = 0;
    fclose(f);
    if (pid == (int)getpid()) unlink(path);
}

/* ---------------------------------------------------------------- start-up ---- */

/* The path the executable was started from, absolute: argv[0] if it has a slash, else the
 * first match on PATH (as execvp found it). */
static void resolve_exe(const char *argv0) {
    if (strchr(argv0, '/')) {
        if (!realpath(argv0, lc.exe)) snprintf(lc.exe, sizeof lc.exe, "%s", argv0);
        return;
    }
    const char *path = getenv("PATH");
    for (const char *p = path ? path : ""; *p;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char cand[PATH_MAX];
        if (snprintf(cand, sizeof cand, "%.*s/%s", (int)n, p, argv0) < (int)sizeof cand &&
            access(cand, X_OK) == 0 && realpath(cand, lc.exe))
            return;
        p += n + (e != NULL);
    }
    snprintf(lc.exe, sizeof lc.exe, "/proc/self/exe"); /* the running binary, at least */
}

int lc_init(char **argv, int *shared) {
    resolve_exe(argv[0]);
    const char *ns = getenv("NOTIFY_SOCKET");
    if (ns && strlen(ns) < sizeof lc.notify) snprintf(lc.notify, sizeof lc.notify, "%s", ns);
    *shared = 0;
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES"), *ready = getenv("UGATE_READY_FD");
    const char *sh = getenv("UGATE_LISTEN_SHARED");
    int fd = -1;
    if (pid && fds && strtol(pid, NULL, 10) == (long)getpid() && strtol(fds, NULL, 10) >= 1) {
        fd = LISTEN_FDS_START;
        long n = strtol(fds, NULL, 10);
        /* From systemd the socket stays systemd's too; from a predecessor, it says. */
        *shared = ready ? sh && !strcmp(sh, "1") : 1;
        if (ready) lc.ready_fd = (int)strtol(ready, NULL, 10);
        say("serving on inherited socket %d%s%s (%s)%s", fd, names ? " named " : "",
            names ? names : "", ready ? "from the previous process" : "socket activation",
            n > 1 ? "; only the first of LISTEN_FDS is served" : "");
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        if (lc.ready_fd >= 0) fcntl(lc.ready_fd, F_SETFD, FD_CLOEXEC);
    }
    /* Not for our children (sd_listen_fds(3) unsets them the same way). */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    unsetenv("UGATE_READY_FD");
    unsetenv("UGATE_LISTEN_SHARED");
    lc.shared = *shared;
    return fd;
}

/* ---------------------------------------------------------------- readiness ---- */

/* Posted before the run: it runs on loop 0's first turn, with the accept armed. */
static void ready(ug_server *srv, void *user) {
    (void)user;
    write_pid_file();
    notify("READY=1\nSTATUS=accepting on port %u, %u loop(s)", ug_server_port(srv),
           ug_server_loops(srv));
    if (lc.ready_fd >= 0) { /* the predecessor hands over once it reads this */
        if (write(lc.ready_fd, "1", 1) != 1) say("readiness pipe: %s", strerror(errno));
        close(lc.ready_fd);
        lc.ready_fd = -1;
    }
}

static void on_gate(ug_server *srv, ug_gate_state st, void *user) {
    (void)srv;
    (void)user;
    if (st == UG_GATE_DRAINING && !atomic_load(&lc.upgraded)) /* else the service goes on */
        notify("STOPPING=1\nSTATUS=draining");
}

/* ---------------------------------------------------------------- the upgrade ---- */

/* The successor's environment: ours without the variables of the protocol, then those. The
 * LISTEN_PID digits are written by the child itself (its pid is known only there). */
typedef struct child_env {
    char **envp;
    char listen_pid[sizeof "LISTEN_PID=" + PID_DIGITS];
    char ready[32], shared[32];
} child_env;

static int is_protocol_var(const char *kv) {
    static const char *const names[] = {
        "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "UGATE_READY_FD=", "UGATE_LISTEN_SHARED="};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strncmp(kv, names[i], strlen(names[i]))) return 1;
    return 0;
}

static int build_env(child_env *ce) {
    size_t n = 0;
    while (environ[n]) n++;
    ce->envp = calloc(n + 5, sizeof *ce->envp);
    if (!ce->envp) return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_protocol_var(environ[i])) ce->envp[k++] = environ[i];
    snprintf(ce->listen_pid, sizeof ce->listen_pid, "LISTEN_PID=%0*d", PID_DIGITS, 0);
    snprintf(ce->ready, sizeof ce->ready, "UGATE_READY_FD=%d", CHILD_READY_FD);
    snprintf(ce->shared, sizeof ce->shared, "UGATE_LISTEN_SHARED=%d", lc.shared);
    ce->envp[k++] = "LISTEN_FDS=1";
    ce->envp[k++] = ce->listen_pid;
    ce->envp[k++] = ce->ready;
    ce->envp[k++] = ce->shared;
    return 0;
}

/* In the child, between fork and exec: async-signal-safe calls only. */
static void child_exec(child_env *ce, int lfd, int ready_w) {
    char *d = ce->listen_pid + sizeof "LISTEN_PID=" - 1;
    unsigned long pid = (unsigned long)getpid();
    for (int i = PID_DIGITS - 1; i >= 0; i--, pid /= 10) d[i] = (char)('0' + pid % 10);
    /* Out of the way first: dup2 onto the descriptor it already is would keep close-on-exec. */
    int l = fcntl(lfd, F_DUPFD_CLOEXEC, 64), r = fcntl(ready_w, F_DUPFD_CLOEXEC, 64);
    if (l < 0 || r < 0 || dup2(l, LISTEN_FDS_START) < 0 || dup2(r, CHILD_READY_FD) < 0) _exit(126);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* the supervisor thread blocks nothing, but be sure */
    execve(lc.exe, lc.opts.argv, ce->envp);
    _exit(127);
}

static void drain_sig_pipe(int *stop) {
    char b[16];
    ssize_t n = read(lc.sig_pipe[0], b, sizeof b);
    for (ssize_t i = 0; i < n; i++)
        if (b[i] == 'q') *stop = 1;
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Returns 1 if the successor took over. */
static int upgrade(int *stop) {
    if (ug_server_state(lc.srv) != UG_GATE_OPEN) {
        say("upgrade: the server is already shutting down; ignored");
        return 0;
    }
    int lfd = ug_server_dup_listener(lc.srv);
    int rp[2] = {-1, -1};
    child_env ce = {0};
    if (lfd < 0 || pipe2(rp, O_CLOEXEC) < 0 || build_env(&ce) < 0) {
        say("upgrade: cannot prepare the successor: %s", strerror(lfd < 0 ? -lfd : errno));
        goto out;
    }
    say("upgrade: starting %s", lc.exe);
    pid_t child = fork();
    if (child == 0) child_exec(&ce, lfd, rp[1]);
    if (child < 0) {
        say("upgrade: fork: %s", strerror(errno));
        goto out;
    }
    close(rp[1]);
    rp[1] = -1;
    notify("STATUS=upgrading: successor pid %d starting", (int)child);
    const char *why = "did not report ready in time";
    uint64_t deadline = mono_ms() + lc.opts.upgrade_timeout_ms;
    int ok = 0;
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline) break;
        struct pollfd p[2] = {{.fd = rp[0], .events = POLLIN},
                              {.fd = lc.sig_pipe[0], .events = POLLIN}};
        if (poll(p, 2, (int)(deadline - now)) < 0 && errno != EINTR) break;
        if (p[1].revents & POLLIN) {
            int before = *stop;
            drain_sig_pipe(stop);
            if (!before && !*stop) say("upgrade: one is already in progress; SIGUSR2 ignored");
            if (*stop) {
                why = "the server is stopping";
                break;
            }
        }
        if (p[0].revents & (POLLIN | POLLHUP)) {
            char c;
            ok = read(rp[0], &c, 1) == 1;
            if (!ok) why = "exited before it was ready";
            break;
        }
    }
    if (ok && ug_server_state(lc.srv) != UG_GATE_OPEN) { /* a SIGTERM came meanwhile */
        ok = 0;
        why = "was ready after this server had begun to shut down";
    }
    if (!ok) {
        kill(child, SIGKILL);
        int status = 0;
        waitpid(child, &status, 0);
        say("upgrade failed: successor pid %d %s (status %d); still serving", (int)child, why,
            status);
        notify("STATUS=upgrade failed: still serving");
        goto out;
    }
    atomic_store(&lc.upgraded, 1);
    notify("MAINPID=%d\nSTATUS=handed over to pid %d", (int)child, (int)child);
    say("upgrade: pid %d is accepting; handing over and draining", (int)child);
    ug_shutdown_opts o = {.drain_timeout_ms = lc.opts.drain_timeout_ms, .handoff = 1};
    ug_server_shutdown(lc.srv, &o);
out:
    if (lfd >= 0) close(lfd);
    if (rp[0] >= 0) close(rp[0]);
    if (rp[1] >= 0) close(rp[1]);
    free(ce.envp);
    return atomic_load(&lc.upgraded);
}

/* ---------------------------------------------------------------- the supervisor ---- */

/* The drain's progress for systemd: what is left, and more time while it is being made. */
static void progress(void) {
    ug_gate_state st = ug_server_state(lc.srv);
    if (st != UG_GATE_DRAINING || atomic_load(&lc.upgraded) || !lc.notify[0]) return;
    ug_stats s;
    ug_server_stats(lc.srv, &s);
    notify("STATUS=draining: %llu connection(s), %llu request(s) in flight\n"
           "EXTEND_TIMEOUT_USEC=%llu",
           (unsigned long long)s.conns_open, (unsigned long long)s.inflight,
           (unsigned long long)lc.opts.drain_timeout_ms * 1000u + EXTEND_MARGIN_US);
}

static void *supervisor(void *arg) {
    (void)arg;
    int stop = 0;
    while (!stop) {
        struct pollfd p = {.fd = lc.sig_pipe[0], .events = POLLIN};
        int n = poll(&p, 1, PROGRESS_MS);
        if (n > 0) {
            char b[16];
            ssize_t k = read(lc.sig_pipe[0], b, sizeof b);
            int want = 0;
            for (ssize_t i = 0; i < k; i++) {
                if (b[i] == 'q') stop = 1;
                if (b[i] == 'u') want = 1;
            }
            if (want && !stop && !atomic_load(&lc.upgraded)) upgrade(&stop);
        }
        progress();
    }
    return NULL;
}

void lc_request_upgrade(void) {
    int saved = errno;
    if (lc.sig_pipe[1] >= 0) (void)!write(lc.sig_pipe[1], "u", 1);
    errno = saved;
}

int lc_start(ug_server *srv, const lc_opts *opts) {
    lc.srv = srv;
    lc.opts = *opts;
    int rc;
    if (pipe2(lc.sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) return -errno;
    if ((rc = ug_server_on_shutdown(srv, on_gate, NULL)) < 0) return rc;
    if ((rc = ug_server_post(srv, ready, NULL)) < 0) return rc;
    /* The supervisor gets no signal: they go to the main thread's handlers. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&lc.thr, NULL, supervisor, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) return -rc;
    lc.thr_started = 1;
    return 0;
}

int lc_finish(void) {
    if (lc.thr_started) {
        (void)!write(lc.sig_pipe[1], "q", 1);
        pthread_join(lc.thr, NULL);
        lc.thr_started = 0;
    }
    int up = atomic_load(&lc.upgraded);
    if (!up) remove_pid_file();
    return up;
}
