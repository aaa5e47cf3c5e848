/* Embedding ugate with middleware and a streamed upload:
 *   - a request-id middleware: echoes a valid client X-Request-Id or makes one, sets it on
 *     the response, and logs each request when it completes (ug_req_on_complete);
 *   - a token middleware on the upload route: 401 unless "Authorization: Bearer <token>";
 *   - PUT /files/NAME: the body streamed to a file under a directory, in constant memory,
 *     pausing the body while each piece is written (a real server would write from a
 *     thread pool; write(2) to a local file stands in for that here).
 *   GET / answers "Hello from ugate" (what tools/test checks).
 *
 *   upload [PORT [DIR [TOKEN]]]      (8080, /tmp, "secret")
 */
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ugate.h>
#include <unistd.h>

static ug_server *srv;
static const char *dir = "/tmp";
static const char *token = "secret";

/* ---- middleware 1: request ids and a log line per request */

static void log_done(const ug_request *req, const ug_completion *info, void *user) {
    (void)user;
    ug_str m = ug_req_method(req), t = ug_req_target(req), id = ug_req_request_id(req);
    fprintf(stderr, "%.*s %.*s %d %llu bytes %.3f ms id=%.*s\n", (int)m.len, m.ptr, (int)t.len,
            t.ptr, info->status, (unsigned long long)info->bytes_in,
            (double)info->duration_ns / 1e6, (int)id.len, id.ptr);
}

static ug_handler_result request_id(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    ug_req_on_complete(req, log_done, NULL); /* -ENOSPC only past 8 per request */
    /* ug_config.request_ids did the work: the id is on the response already. A middleware
     * may still read it, or replace the header with ug_resp_header_set. */
    ug_next(req, next);
    return UG_DONE;
}

/* ---- middleware 2: a bearer token */

static ug_handler_result check_token(ug_request *req, ug_chain_pos next, void *user) {
    (void)user;
    ug_str a = ug_req_header(req, "Authorization");
    size_t tl = strlen(token);
    if (!a.ptr || a.len != 7 + tl || memcmp(a.ptr, "Bearer ", 7) || memcmp(a.ptr + 7, token, tl)) {
        ug_resp_header_set(req, "WWW-Authenticate", "Bearer");
        ug_resp_send(req, 401, "text/plain", "unauthorized\n", 13);
        return UG_DONE; /* short-circuit: the body is never read, the client never sends it */
    }
    ug_next(req, next);
    return UG_DONE;
}

/* ---- PUT /files/NAME */

typedef struct file_upload {
    int fd;
    unsigned long long bytes;
} file_upload;

static void upload_free(file_upload *u) {
    if (u->fd >= 0) close(u->fd);
    free(u);
}

static void upload_cancelled(ug_request *req, ug_cancel_reason why, void *user) {
    (void)req;
    fprintf(stderr, "upload cancelled (reason %d)\n", (int)why);
    upload_free(user);
}

static void upload_piece(ug_request *req, const void *data, size_t len, int end, void *user) {
    file_upload *u = user;
    ug_req_body_pause(req); /* no piece while this one is written */
    for (size_t off = 0; off < len;) {
        ssize_t n = write(u->fd, (const char *)data + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            ug_req_on_cancel(req, NULL, NULL);
            upload_free(u);
            ug_resp_send(req, 507, "text/plain", "write failed\n", 13);
            return; /* answered: no piece follows */
        }
        off += (size_t)n;
    }
    u->bytes += len;
    if (!end) {
        ug_req_body_resume(req);
        return;
    }
    char msg[64];
    int n = snprintf(msg, sizeof msg, "stored %llu bytes\n", u->bytes);
    ug_req_on_cancel(req, NULL, NULL);
    upload_free(u);
    ug_resp_send(req, 201, "text/plain", msg, (size_t)n);
}

static ug_handler_result put_file(ug_request *req, void *user) {
    (void)user;
    ug_str p = ug_req_path(req);
    ug_str name = {p.ptr + 7, p.len - 7}; /* after "/files/" */
    int ok = name.len > 0 && name.len < 128;
    for (size_t i = 0; ok && i < name.len; i++) /* one plain file name: no '/', no ".." */
        ok = (name.ptr[i] >= 'a' && name.ptr[i] <= 'z') ||
             (name.ptr[i] >= '0' && name.ptr[i] <= '9') || name.ptr[i] == '-' ||
             name.ptr[i] == '_' || (name.ptr[i] == '.' && i > 0);
    if (!ok) {
        ug_resp_send(req, 400, "text/plain", "bad file name\n", 14);
        return UG_DONE;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/%.*s", dir, (int)name.len, name.ptr);
    file_upload *u = malloc(sizeof *u);
    if (!u) {
        ug_resp_send(req, 503, "text/plain", "busy\n", 5);
        return UG_DONE;
    }
    u->bytes = 0;
    u->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (u->fd < 0 || ug_req_read_body(req, upload_piece, u) < 0) {
        upload_free(u);
        ug_resp_send(req, 500, "text/plain", "cannot store\n", 13);
        return UG_DONE;
    }
    ug_req_on_cancel(req, upload_cancelled, u); /* client gone, limit, timeout: close it */
    return UG_LATER;
}

static ug_handler_result hello(ug_request *req, void *user) {
    (void)user;
    ug_resp_send(req, 200, "text/plain", "Hello from ugate\n", 17);
    return UG_DONE;
}

static void on_signal(int sig) {
    (void)sig;
    ug_server_shutdown(srv, NULL); /* async-signal-safe */
}

int main(int argc, char **argv) {
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.port = argc > 1 ? (uint16_t)atoi(argv[1]) : 8080;
    if (argc > 2) dir = argv[2];
    if (argc > 3) token = argv[3];
    cfg.request_ids = 1;
    if (ug_server_create(&srv, &cfg) < 0) return 1;
    if (ug_use(srv, "request-id", request_id, NULL) < 0 ||
        ug_route(srv, "GET", "/", UG_ROUTE_EXACT, hello, NULL) < 0 ||
        ug_route(srv, "PUT", "/files/", UG_ROUTE_PREFIX | UG_ROUTE_STREAM_BODY, put_file, NULL) <
            0 ||
        ug_route_body_limit(srv, "PUT", "/files/", 4ull << 30) < 0 ||
        ug_route_use(srv, "PUT", "/files/", "token", check_token, NULL) < 0) {
        ug_server_free(srv);
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("listening on 127.0.0.1:%u\n", ug_server_port(srv));
    fflush(stdout);
    int rc = ug_server_run(srv, NULL);
    ug_server_free(srv);
    return rc == 0 ? 0 : 1;
}
