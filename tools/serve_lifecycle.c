/* ugate-serve's process lifecycle (serve_lifecycle.h).
 *
 * Socket activation follows sd_listen_fds(3): LISTEN_PID must be this process and LISTEN_FDS
 * at least 1; the sockets start at descriptor 3 (SD_LISTEN_FDS_START); LISTEN_FDNAMES names
 * them (colon-separated). sd_notify(3) is one datagram to the AF_UNIX socket in NOTIFY_SOCKET
 * (a path, or '@' for the abstract namespace). Both are implemented here, as documented,
 * rather than linking libsystemd: the protocol is a few lines and ugate-serve then runs the
 * same everywhere.
 *
 * The upgrade (SIGUSR2, as nginx): the supervisor thread forks and execs the executable now
 * at the path this process was started from, with the same arguments, handing it the
 * listening sockets by the same protocol (descriptor 3, and 4 for the admin socket,
 * LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID = its pid) and a pipe (UGATE_READY_FD, the
 * descriptor after the sockets) on which it says once it is accepting. Then this process
 * closes its gate by hand-off (the socket stays open in the successor, its queue is the
 * successor's), drains and exits 0. A successor that exits or is not ready within the
 * timeout is killed, and this process goes on serving (the rollback). A SIGTERM during an
 * upgrade undoes it first (the successor is killed), then stops the server as asked.
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
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LISTEN_FDS_START 3 /* SD_LISTEN_FDS_START */
#define TEMP_FD_MIN 10     /* the child's temporary copies, clear of 3..5 */
#define PID_DIGITS 10      /* "LISTEN_PID=" is followed by this many digits, filled in the child */
#define PROGRESS_MS 1000   /* STATUS= and EXTEND_TIMEOUT_USEC= while draining */
#define EXTEND_MARGIN_US 5000000ull

extern char **environ;

static struct {
    char exe[PATH_MAX];
    char notify[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int shared;   /* systemd holds the sockets too */
    int ready_fd; /* a predecessor waits on it, or -1 */
    ug_server *srv;
    lc_opts opts;
    int sig_pipe[2]; /* SIGUSR2 ('u'), SIGTERM ('t', 'i' immediate), to the supervisor */
    pthread_t thr;
    int thr_started;
    _Atomic int stop;      /* lc_finish: the supervisor ends */
    _Atomic int upgrading; /* between the fork and the decision: stops go to the supervisor */
    _Atomic int upgraded;  /* a successor took over: no STOPPING=1, the pid file is its */
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
    fprintf(stderr, "%02d:%02d:%02d.%03ld ugate-serve info: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, msg);
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

/* Written whole or not at all: a temporary file (created, never followed if planted), then
 * rename(2). */
static void write_pid_file(void) {
    const char *path = lc.opts.pid_file;
    if (!path) return;
    char tmp[PATH_MAX], line[32];
    if (snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof tmp) return;
    int n = snprintf(line, sizeof line, "%d\n", (int)getpid());
    int fd = -1;
    for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST) unlink(tmp); /* a crashed run's, or planted: removed */
    }
    if (fd < 0 || write(fd, line, (size_t)n) != n || close(fd) != 0 || rename(tmp, path) != 0) {
        say("pid file %s: %s", path, strerror(errno));
        unlink(tmp);
    }
}

/* Removed at a final exit, if it is still ours. */
static void remove_pid_file(void) {
    const char *path = lc.opts.pid_file;
    if (!path) return;
    FILE *f = fopen(path, "re");
    int pid = 0;
    if (!f) return;
    if (fscanf(f, "%d", &pid) != 1) pid = 0;
    fclose(f);
    if (pid == (int)getpid()) unlink(path);
}

/* ---------------------------------------------------------------- start-up ---- */

static int path_search(const char *argv0, const char *cwd);

/* The path the executable was started from, made absolute but not resolved: a deploy that
 * switches a symlink (current -> v2) upgrades to what the link names then. */
static void resolve_exe(const char *argv0) {
    char cwd[PATH_MAX];
    int k;
    if (argv0[0] == '/') {
        k = snprintf(lc.exe, sizeof lc.exe, "%s", argv0);
        if (k > 0 && k < (int)sizeof lc.exe) return;
    } else {
        if (!getcwd(cwd, sizeof cwd)) cwd[0] = '\0';
        if (strchr(argv0, '/')) {
            k = snprintf(lc.exe, sizeof lc.exe, "%s/%s", cwd, argv0);
            if (k > 0 && k < (int)sizeof lc.exe) return;
        } else if (path_search(argv0, cwd)) {
            return;
        }
    }
    snprintf(lc.exe, sizeof lc.exe, "/proc/self/exe"); /* the running binary, at least */
}

/* argv0 on PATH, as execvp found it: 1 if found (in lc.exe). */
static int path_search(const char *argv0, const char *cwd) {
    const char *path = getenv("PATH");
    for (const char *p = path ? path : ""; *p;) { /* as execvp found it */
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char cand[PATH_MAX];
        int k = p[0] == '/' ? snprintf(cand, sizeof cand, "%.*s/%s", (int)n, p, argv0)
                            : snprintf(cand, sizeof cand, "%s/%.*s/%s", cwd, (int)n, p, argv0);
        if (k > 0 && k < (int)sizeof cand && access(cand, X_OK) == 0) {
            memcpy(lc.exe, cand, (size_t)k + 1);
            return 1;
        }
        p += n + (e != NULL);
    }
    return 0;
}

/* A whole decimal number, or -1. */
static long number(const char *s) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || *end || v < 0 ? -1 : v;
}

/* The index of name in LISTEN_FDNAMES ("http:admin"), or -1. */
static int name_index(const char *names, const char *name) {
    int i = 0;
    for (const char *p = names; p && *p; i++) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == strlen(name) && !strncmp(p, name, n)) return i;
        if (!e) break;
        p = e + 1;
    }
    return -1;
}

void lc_init(char **argv, lc_sockets *out) {
    resolve_exe(argv[0]);
    const char *ns = getenv("NOTIFY_SOCKET");
    /* sd_notify(3): an absolute path or an abstract name; anything else is ignored */
    if (ns && (ns[0] == '/' || ns[0] == '@') && strlen(ns) < sizeof lc.notify)
        snprintf(lc.notify, sizeof lc.notify, "%s", ns);
    *out = (lc_sockets){.http = -1, .admin = -1};
    long pid = number(getenv("LISTEN_PID")), n = number(getenv("LISTEN_FDS"));
    const char *names = getenv("LISTEN_FDNAMES"), *sh = getenv("UGATE_LISTEN_SHARED");
    long ready = number(getenv("UGATE_READY_FD"));
    if (pid == (long)getpid() && n >= 1 && n <= 64) {
        for (long i = 0; i < n; i++) fcntl(LISTEN_FDS_START + (int)i, F_SETFD, FD_CLOEXEC);
        int ai = name_index(names, "admin");
        if (ai >= n) ai = -1;
        out->http = LISTEN_FDS_START + (ai == 0 && n > 1 ? 1 : 0);
        if (ai >= 0 && LISTEN_FDS_START + ai != out->http) out->admin = LISTEN_FDS_START + ai;
        /* A predecessor's readiness pipe comes right after the sockets, and is a pipe. */
        struct stat st;
        if (ready >= 0 && (ready != LISTEN_FDS_START + n || fstat((int)ready, &st) != 0 ||
                           !S_ISFIFO(st.st_mode))) {
            say("UGATE_READY_FD=%ld is not the readiness pipe after the sockets: ignored", ready);
            ready = -1;
        }
        if (ready >= 0) {
            lc.ready_fd = (int)ready;
            fcntl(lc.ready_fd, F_SETFD, FD_CLOEXEC);
        }
        /* From systemd the sockets stay systemd's too; from a predecessor, it says. */
        out->shared = ready >= 0 ? sh && !strcmp(sh, "1") : 1;
        say("serving on inherited socket %d%s%s (%s)%s%s", out->http, names ? " of " : "",
            names ? names : "", ready >= 0 ? "from the previous process" : "socket activation",
            out->admin >= 0 ? ", the admin socket too" : "",
            n > 1 + (out->admin >= 0) ? "; the other LISTEN_FDS are not served" : "");
    }
    /* Not for our children (sd_listen_fds(3) unsets them the same way). */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    unsetenv("UGATE_READY_FD");
    unsetenv("UGATE_LISTEN_SHARED");
    lc.shared = out->shared;
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
    char fds[32], names[48], ready[32], shared[32];
} child_env;

static int is_protocol_var(const char *kv) {
    static const char *const names[] = {
        "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "UGATE_READY_FD=", "UGATE_LISTEN_SHARED="};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strncmp(kv, names[i], strlen(names[i]))) return 1;
    return 0;
}

static int build_env(child_env *ce, int nfds) {
    size_t n = 0;
    while (environ[n]) n++;
    ce->envp = calloc(n + 6, sizeof *ce->envp);
    if (!ce->envp) return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_protocol_var(environ[i])) ce->envp[k++] = environ[i];
    snprintf(ce->listen_pid, sizeof ce->listen_pid, "LISTEN_PID=%0*d", PID_DIGITS, 0);
    snprintf(ce->fds, sizeof ce->fds, "LISTEN_FDS=%d", nfds);
    snprintf(ce->names, sizeof ce->names, "LISTEN_FDNAMES=%s", nfds > 1 ? "http:admin" : "http");
    snprintf(ce->ready, sizeof ce->ready, "UGATE_READY_FD=%d", LISTEN_FDS_START + nfds);
    snprintf(ce->shared, sizeof ce->shared, "UGATE_LISTEN_SHARED=%d", lc.shared);
    ce->envp[k++] = ce->fds;
    ce->envp[k++] = ce->names;
    ce->envp[k++] = ce->listen_pid;
    ce->envp[k++] = ce->ready;
    ce->envp[k++] = ce->shared;
    return 0;
}

/* In the child, between fork and exec: async-signal-safe calls only. fds[] are the sockets
 * (the http one first), then the readiness pipe's write end. */
static void child_exec(child_env *ce, const int *fds, int nfds) {
    char *d = ce->listen_pid + sizeof "LISTEN_PID=" - 1;
    unsigned long pid = (unsigned long)getpid();
    for (int i = PID_DIGITS - 1; i >= 0; i--, pid /= 10) d[i] = (char)('0' + pid % 10);
    /* Out of the way first (dup2 onto the descriptor it already is would keep close-on-exec),
     * then into place, 3 onwards; the copies close at exec. */
    int tmp[4];
    for (int i = 0; i < nfds; i++)
        if ((tmp[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, TEMP_FD_MIN)) < 0) _exit(126);
    for (int i = 0; i < nfds; i++)
        if (dup2(tmp[i], LISTEN_FDS_START + i) < 0) _exit(126);
    /* This process's handlers must not run here (a SIGTERM meant for the child would write
     * to the parent's pipes): the defaults, then the signals the supervisor blocks. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    static const int sigs[] = {SIGTERM, SIGINT, SIGUSR2, SIGHUP, SIGQUIT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(lc.exe, lc.opts.argv, ce->envp);
    _exit(127);
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* What the supervisor's pipe said. */
typedef struct wakes {
    int upgrade, stop, immediate;
} wakes;

static void read_wakes(wakes *w) {
    char b[32];
    ssize_t n;
    while ((n = read(lc.sig_pipe[0], b, sizeof b)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (b[i] == 'u') w->upgrade = 1;
            if (b[i] == 't') w->stop = 1;
            if (b[i] == 'i') w->stop = w->immediate = 1;
        }
}

/* Stop the server as a signal asked (after an upgrade was undone). */
static void stop_server(const wakes *w) {
    ug_shutdown_opts o = lc.opts.stop ? *lc.opts.stop : (ug_shutdown_opts){0};
    if (w->immediate) o.immediate = 1;
    ug_server_shutdown(lc.srv, &o);
}

/* Did the successor write its byte (a last look without waiting)? */
static int ready_now(int fd) {
    char c;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN) && read(fd, &c, 1) == 1;
}

static void upgrade(wakes *w) {
    if (ug_server_state(lc.srv) != UG_GATE_OPEN) {
        say("upgrade: the server is already shutting down; ignored");
        return;
    }
    int fds[3] = {-1, -1, -1}, nfds = 1, rp[2] = {-1, -1};
    child_env ce = {0};
    pid_t child = -1;
    const char *why = "did not report ready in time";
    fds[0] = ug_server_dup_listener(lc.srv);
    if (lc.opts.admin) fds[nfds++] = ug_server_dup_listener(lc.opts.admin);
    int bad = fds[0] < 0 || (lc.opts.admin && fds[1] < 0);
    if (bad || pipe2(rp, O_CLOEXEC) < 0 || build_env(&ce, nfds) < 0) {
        say("upgrade: cannot prepare the successor: %s",
            bad ? "no listening socket" : strerror(errno));
        goto out;
    }
    fds[nfds] = rp[1];
    say("upgrade: starting %s", lc.exe);
    atomic_store(&lc.upgrading, 1); /* from here on a SIGTERM waits for the decision */
    child = fork();
    if (child == 0) child_exec(&ce, fds, nfds + 1);
    if (child < 0) {
        say("upgrade: fork: %s", strerror(errno));
        goto out;
    }
    close(rp[1]);
    rp[1] = -1;
    notify("STATUS=upgrading: successor pid %d starting", (int)child);
    uint64_t deadline = mono_ms() + lc.opts.upgrade_timeout_ms;
    int ok = 0;
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline) {
            ok = ready_now(rp[0]); /* it may have made it just now */
            break;
        }
        uint64_t left = deadline - now;
        struct pollfd p[2] = {{.fd = rp[0], .events = POLLIN},
                              {.fd = lc.sig_pipe[0], .events = POLLIN}};
        if (poll(p, 2, left > INT_MAX ? INT_MAX : (int)left) < 0 && errno != EINTR) {
            why = "could not be waited for";
            break;
        }
        if (p[1].revents & POLLIN) {
            wakes now_w = {0};
            read_wakes(&now_w);
            if (now_w.upgrade) say("upgrade: one is already in progress; SIGUSR2 ignored");
            if (now_w.stop) {
                w->stop = 1;
                w->immediate |= now_w.immediate;
                why = "was abandoned: a stop was asked for";
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
    if (ok && ug_server_state(lc.srv) != UG_GATE_OPEN) {
        ok = 0;
        why = "was ready after this server had begun to shut down";
    }
    if (!ok) {
        kill(child, SIGKILL);
        int status = 0;
        waitpid(child, &status, 0);
        say("upgrade failed: successor pid %d %s (status %d); %s", (int)child, why, status,
            w->stop ? "stopping" : "still serving");
        notify("STATUS=upgrade failed: %s", w->stop ? "stopping" : "still serving");
        write_pid_file(); /* the successor may have written its own before it was killed */
        goto out;
    }
    atomic_store(&lc.upgraded, 1);
    notify("MAINPID=%d\nSTATUS=handed over to pid %d", (int)child, (int)child);
    say("upgrade: pid %d is accepting; handing over and draining", (int)child);
    ug_shutdown_opts o = {.drain_timeout_ms = lc.opts.drain_timeout_ms, .handoff = 1};
    ug_server_shutdown(lc.srv, &o);
out:
    atomic_store(&lc.upgrading, 0);
    for (int i = 0; i < nfds; i++)
        if (fds[i] >= 0) close(fds[i]);
    if (rp[0] >= 0) close(rp[0]);
    if (rp[1] >= 0) close(rp[1]);
    free(ce.envp);
    /* A stop that came in while the flag was still set, but after the wait: it is still the
     * supervisor's (the caller reads the pipe again). */
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
    while (!atomic_load(&lc.stop)) {
        struct pollfd p = {.fd = lc.sig_pipe[0], .events = POLLIN};
        wakes w = {0};
        if (poll(&p, 1, PROGRESS_MS) > 0) read_wakes(&w);
        if (w.upgrade && !w.stop && !atomic_load(&lc.upgraded)) upgrade(&w);
        if (w.stop) stop_server(&w);
        progress();
    }
    return NULL;
}

void lc_request_upgrade(void) {
    int saved = errno;
    if (lc.sig_pipe[1] >= 0) (void)!write(lc.sig_pipe[1], "u", 1);
    errno = saved;
}

int lc_request_stop(int immediate) {
    if (!atomic_load(&lc.upgrading) || lc.sig_pipe[1] < 0) return 0;
    int saved = errno;
    (void)!write(lc.sig_pipe[1], immediate ? "i" : "t", 1);
    errno = saved;
    return 1;
}

int lc_upgraded(void) {
    return atomic_load(&lc.upgraded);
}

int lc_start(ug_server *srv, const lc_opts *opts) {
    lc.srv = srv;
    lc.opts = *opts;
    if (lc.opts.upgrade_timeout_ms == 0) lc.opts.upgrade_timeout_ms = 1;
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
        atomic_store(&lc.stop, 1); /* seen within PROGRESS_MS even if the byte is not */
        (void)!write(lc.sig_pipe[1], "q", 1);
        pthread_join(lc.thr, NULL);
        lc.thr_started = 0;
    }
    int up = atomic_load(&lc.upgraded);
    if (!up) remove_pid_file();
    return up;
}
