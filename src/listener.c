/* The listener, owned by loop 0: the accept, its pause and resume at max_conns and on
 * resource errors, the hand-off of each connection to a loop, and the close at the gate.
 *
 * The close: cancel the accept, serve every connection whose accept completion arrives
 * before the cancel's final completion (they were accepted before the close point), then
 * stop new handshakes (a socket filter drops bare SYNs), take what already completed its
 * handshake from the kernel's accept queue with non-blocking accept4() until EAGAIN (those
 * accepts may never have run in the backend), give handshakes under way gate_settle_ms,
 * take those too, and close the listener so that later clients are refused at once.
 *
 * The hand-off close (ug_shutdown_opts.handoff) stops at the cancel's final completion: the
 * socket is shared with a process that goes on accepting, so its queue is theirs (no filter,
 * no draining it into this process) and only this process's descriptor is closed.
 *
 * Every state and its transitions are here (enum ug__listener_state in core.h).
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ACCEPT_RETRY_MS 100u

static ug__listener *L(ug__loop *lp0) {
    return &lp0->srv->listener;
}

/* The listener's timers live on loop 0 and have reserved heap slots: they cannot fail. */
static void reserved_timer(ug__loop *lp0, ug__timer *t, uint32_t ms) {
    int rc = ug__timer_start(&lp0->timers, t, lp0->now_ms + ms);
    assert(rc == 0 && t->reserved);
    (void)rc;
}

static int arm_accept(ug__loop *lp0) {
    ug__listener *l = L(lp0);
    int rc = lp0->be_ops->accept(lp0->be, l->fd, UG_UD(UG_OP_ACCEPT, 0, 0));
    if (rc == 0) l->state = UG_LS_ACCEPTING;
    return rc;
}

static void retry_later(ug__loop *lp0) {
    L(lp0)->state = UG_LS_RETRY;
    reserved_timer(lp0, &L(lp0)->retry_timer, ACCEPT_RETRY_MS);
}

/* While paused at max_conns, the limit is looked at again every ACCEPT_RETRY_MS as well as
 * when a loop wakes loop 0: a loop's close stores its count and then reads `paused`, loop 0
 * stores `paused` and then reads the counts, both relaxed (a fence there would put a locked
 * instruction on every close), so both reads may see the old values and that wake be
 * missed. The timer bounds what such a miss costs; the retry of a failed arm shares it. */
static void pause_check_later(ug__loop *lp0) {
    if (L(lp0)->state == UG_LS_PAUSED) reserved_timer(lp0, &L(lp0)->retry_timer, ACCEPT_RETRY_MS);
}

static void retry_fired(ug__timer *t, void *arg) {
    (void)t;
    ug__loop *lp0 = arg;
    if (ug__gate_state(lp0->srv) >= UG_GATE_DRAINING) return;
    if (L(lp0)->state == UG_LS_PAUSED) {
        ug__listener_check_limit(lp0);
        pause_check_later(lp0);
        return;
    }
    if (L(lp0)->state != UG_LS_RETRY) return;
    if (arm_accept(lp0)) {
        ug__log(lp0->srv, UG_LOG_ERROR, "cannot re-arm the accept; retrying");
        retry_later(lp0);
    }
}

/* ---------------------------------------------------------------- hand-off ---- */

/* The loop with the fewest connections (counting those on their way to it), starting the
 * search after the last choice so that equal loops take turns. */
static ug__loop *pick_loop(ug_server *srv) {
    uint32_t n = srv->nloops;
    if (n == 1) return srv->loops[0];
    ug__listener *l = &srv->listener;
    ug__loop *best = NULL;
    uint64_t best_load = UINT64_MAX;
    for (uint32_t k = 0; k < n; k++) {
        ug__loop *lp = srv->loops[(l->next_loop + k) % n];
        if (atomic_load_explicit(&lp->ended, memory_order_relaxed)) continue;
        uint64_t load = ug__loop_load(lp);
        if (load < best_load) {
            best = lp;
            best_load = load;
        }
    }
    l->next_loop = (l->next_loop + 1) % n;
    return best ? best : srv->loops[0];
}

/* A connection accepted: to the loop that takes it, or loop 0 when that loop's inbox is
 * full. */
static void take(ug__loop *lp0, int fd) {
    ug__loop *lp = pick_loop(lp0->srv);
    if (lp == lp0 || ug__loop_hand(lp, fd) != 0) ug__conn_accepted(lp0, fd);
    ug__listener_check_limit(lp0);
}

/* Take every connection that completed its handshake and waits in the kernel's queue. */
static void drain_queue(ug__loop *lp0) {
    ug_server *srv = lp0->srv;
    for (;;) {
        int fd = ug__sock_accept_nb(L(lp0)->fd);
        if (fd < 0) {
            if (fd != -EAGAIN) ug__log(srv, UG_LOG_WARN, "accept while closing: %s", strerror(-fd));
            return;
        }
        srv->report.accepted_at_close++;
        take(lp0, fd);
    }
}

/* ---------------------------------------------------------------- the close ---- */

/* The descriptor goes under fd_mu: ug_server_dup_listener never dups a number reused since. */
static void close_fd(ug__loop *lp0) {
    ug__listener *l = L(lp0);
    pthread_mutex_lock(&l->fd_mu);
    lp0->be_ops->close(lp0->be, l->fd);
    l->fd = -1;
    pthread_mutex_unlock(&l->fd_mu);
}

static void close_now(ug__loop *lp0, int drain) {
    ug_server *srv = lp0->srv;
    ug__listener *l = L(lp0);
    if (drain) drain_queue(lp0);
    close_fd(lp0);
    l->state = UG_LS_CLOSED;
    srv->report.close_us = (lp0->now_ms - srv->gate.t_close_ms) * 1000u;
    ug__log(srv, UG_LOG_INFO,
            "listener closed %llu ms after the gate: %llu connection(s) taken while closing",
            (unsigned long long)(lp0->now_ms - srv->gate.t_close_ms),
            (unsigned long long)srv->report.accepted_at_close);
    /* Published after the last hand-off: a loop that sees it closed, then its inbox empty,
     * gets nothing more. */
    atomic_store_explicit(&l->closed, 1, memory_order_release);
    ug__gate_wake_all(srv);
}

static void settle_over(ug__timer *t, void *arg) {
    (void)t;
    close_now(arg, 1);
}

/* The accept has delivered its final completion: nothing more comes from it. Closing the
 * listener resets every connection still in its accept queue, including ones whose
 * handshake completes between our last accept4() and close(). So: first stop new
 * handshakes (drop bare SYNs), take what is queued, give handshakes already under way
 * gate_settle_ms to finish (loopback and LAN need far less than a millisecond), take those
 * too, then close. Clients arriving after the close are refused at once; the few whose SYN
 * lands inside the settle window are refused at their SYN retransmission instead. */
static void begin_close(ug__loop *lp0) {
    ug_server *srv = lp0->srv;
    ug__listener *l = L(lp0);
    if (atomic_load(&srv->gate.handoff)) { /* the queue is the other holders' */
        ug__log(srv, UG_LOG_INFO,
                "gate closed by hand-off: the listening socket stays open for "
                "the process that shares it");
        close_now(lp0, 0);
        return;
    }
    int rc = ug__sock_drop_syn(l->fd);
    if (rc < 0)
        ug__log(srv, UG_LOG_WARN, "cannot filter SYNs on the listener (%s): closing at once",
                strerror(-rc));
    if (rc < 0 || !srv->cfg.gate_settle_ms) {
        close_now(lp0, 1);
        return;
    }
    drain_queue(lp0);
    l->state = UG_LS_SETTLING;
    reserved_timer(lp0, &l->settle_timer, srv->cfg.gate_settle_ms);
}

void ug__listener_gate_closed(ug__loop *lp0) {
    ug__listener *l = L(lp0);
    atomic_store_explicit(&l->paused, 0, memory_order_relaxed);
    switch (l->state) {
    case UG_LS_ACCEPTING:
        l->cancel_retry = lp0->be_ops->cancel(lp0->be, UG_UD(UG_OP_ACCEPT, 0, 0)) != 0;
        l->state = UG_LS_CLOSING;
        break;
    case UG_LS_PAUSING: /* its cancel is on the way: its final completion closes */
        l->state = UG_LS_CLOSING;
        break;
    case UG_LS_IDLE:
    case UG_LS_RETRY:
    case UG_LS_PAUSED:
        ug__timer_stop(&lp0->timers, &l->retry_timer);
        begin_close(lp0);
        break;
    default: /* already closing */
        break;
    }
}

/* ---------------------------------------------------------------- accepting ---- */

int ug__listener_open(ug_server *srv) {
    ug__listener *l = &srv->listener;
    const ug_config *cfg = &srv->cfg;
    atomic_init(&l->closed, 0);
    atomic_init(&l->paused, 0);
    l->fd_mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    if (cfg->listen_fd >= 0) {
        int fl = fcntl(cfg->listen_fd, F_GETFL);
        if (fl < 0 || fcntl(cfg->listen_fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
        /* A listening stream socket, or the accept would fail at once and forever. */
        int rc = ug__sock_check_listening(cfg->listen_fd);
        if (rc < 0) return rc;
        /* A predecessor that died with its gate closing left its SYN filter: without this,
         * nobody could connect. */
        rc = ug__sock_detach_filter(cfg->listen_fd);
        if (rc < 0) return rc;
        if (ug__sock_port(cfg->listen_fd, &l->port) < 0) l->port = 0;
        l->fd = cfg->listen_fd;
        /* An adopted socket's options are not ours to trust (or change): connections queued
         * before now, a predecessor's setting, another holder's later one. Each accepted
         * connection gets TCP_NODELAY itself. */
        l->nodelay = 0;
    } else {
        int fd = ug__listen(cfg->host, cfg->port, cfg->backlog, &l->port);
        if (fd < 0) return fd;
        l->fd = fd;
        l->nodelay = 1; /* set before listen(): inherited by every connection (sock.c) */
    }
    l->state = UG_LS_IDLE;
    ug__loop *lp0 = srv->loops[0];
    if (ug__timer_init_reserved(&lp0->timers, &l->retry_timer, retry_fired) ||
        ug__timer_init_reserved(&lp0->timers, &l->settle_timer, settle_over))
        return -ENOMEM;
    return 0;
}

int ug__listener_start(ug__loop *lp0) {
    if (L(lp0)->state != UG_LS_IDLE || ug__gate_state(lp0->srv) != UG_GATE_OPEN) return 0;
    return arm_accept(lp0);
}

/* Backpressure through the gate: at max_conns (all loops together) the accept is cancelled,
 * so new clients wait in the kernel's backlog (their handshake is answered by the kernel;
 * they are just not accepted yet) instead of being accepted and dropped. Accept completions
 * already posted still arrive and are served (the slot arrays have headroom for them).
 * Below the low watermark the accept is re-armed. */
void ug__listener_check_limit(ug__loop *lp0) {
    ug_server *srv = lp0->srv;
    ug__listener *l = L(lp0);
    uint32_t max = srv->cfg.max_conns;
    if (ug__gate_state(srv) >= UG_GATE_DRAINING) return;
    if (l->state == UG_LS_ACCEPTING) {
        if (ug__server_load(srv) < max) return;
        /* No room to cancel: tried again at the next accept or close. */
        if (lp0->be_ops->cancel(lp0->be, UG_UD(UG_OP_ACCEPT, 0, 0)) != 0) return;
        UG_STAT_INC(lp0, accept_pauses);
        atomic_store_explicit(&l->paused, 1, memory_order_relaxed);
        l->state = UG_LS_PAUSING;
        return;
    }
    if (l->state != UG_LS_PAUSED) return;
    uint32_t low = max - (max / 16 ? max / 16 : 1);
    if (ug__server_load(srv) > low) return;
    UG_STAT_INC(lp0, accept_resumes);
    atomic_store_explicit(&l->paused, 0, memory_order_relaxed);
    if (arm_accept(lp0)) retry_later(lp0);
}

void ug__listener_on_accept(ug__loop *lp0, const ug__completion *cq) {
    ug_server *srv = lp0->srv;
    ug__listener *l = L(lp0);
    if (cq->res >= 0) {
        if (l->state == UG_LS_CLOSED) {      /* impossible by construction: the listener closes */
            assert(!"accepted after close"); /* after the accept's final completion */
            srv->report.accepted_after_close++;
        }
        if (l->state == UG_LS_CLOSING) srv->report.accepted_at_close++;
        take(lp0, cq->res);
    } else if (cq->res != -ECANCELED) {
        UG_STAT_INC(lp0, accept_errors);
        ug__log(srv, UG_LOG_WARN, "accept: %s", strerror(-cq->res));
    }
    if (cq->flags & UG__CF_MORE) return;
    switch (l->state) {
    case UG_LS_CLOSING:
        begin_close(lp0);
        return;
    case UG_LS_PAUSING: /* the pause's cancel completed; the resume may already be due */
        l->state = UG_LS_PAUSED;
        ug__listener_check_limit(lp0);
        pause_check_later(lp0);
        return;
    case UG_LS_ACCEPTING:
        break;
    default:
        assert(!"accept completion in a state without an armed accept");
        return;
    }
    /* The accept ended without being cancelled (CQ overflow, an error): a server that
     * silently stops accepting looks healthy and serves no one. Re-arm; after resource
     * errors (EMFILE, ENFILE, ENOMEM, ENOBUFS) wait a little instead of spinning. */
    UG_STAT_INC(lp0, accept_rearms);
    if (cq->res == -EMFILE || cq->res == -ENFILE || cq->res == -ENOMEM || cq->res == -ENOBUFS) {
        retry_later(lp0);
        return;
    }
    if (arm_accept(lp0)) {
        ug__log(srv, UG_LOG_ERROR, "cannot re-arm the accept; retrying");
        retry_later(lp0);
    }
}

void ug__listener_turn(ug__loop *lp0) {
    ug_server *srv = lp0->srv;
    ug__listener *l = L(lp0);
    if (l->state == UG_LS_CLOSING && l->cancel_retry) /* the SQ was full: try again */
        l->cancel_retry = lp0->be_ops->cancel(lp0->be, UG_UD(UG_OP_ACCEPT, 0, 0)) != 0;
    if (l->state == UG_LS_PAUSED) ug__listener_check_limit(lp0); /* loops closed some */
    /* One wake per loop per turn for the connections handed to it. */
    for (uint32_t i = 1; i < srv->nloops; i++) {
        ug__loop *lp = srv->loops[i];
        if (!lp->wake_pending) continue;
        lp->wake_pending = 0;
        ug__loop_wake(lp);
    }
}

void ug__listener_fail(ug__loop *lp0) {
    ug__listener *l = L(lp0);
    if (l->fd >= 0) close_fd(lp0);
    l->state = UG_LS_CLOSED;
    atomic_store_explicit(&l->closed, 1, memory_order_release);
}

void ug__listener_close_fd(ug_server *srv) {
    ug__listener *l = &srv->listener;
    if (l->fd >= 0) close(l->fd);
    l->fd = -1;
    pthread_mutex_destroy(&l->fd_mu);
}

int ug_server_dup_listener(ug_server *srv) {
    if (!srv) return -EINVAL;
    ug__listener *l = &srv->listener;
    pthread_mutex_lock(&l->fd_mu);
    /* Once the gate has closed the socket may carry the SYN filter: not one to hand on. */
    int fd = l->fd < 0 || ug_server_state(srv) >= UG_GATE_DRAINING
                 ? -EBADF
                 : fcntl(l->fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0 && fd != -EBADF) fd = -errno;
    pthread_mutex_unlock(&l->fd_mu);
    return fd;
}
