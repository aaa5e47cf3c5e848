/*
 * ugate — an HTTP/1.1 server core for Linux io_uring (with an epoll baseline).
 *
 * This is the only public header. Conventions:
 *   - Handles are opaque. Every name is prefixed ug_.
 *   - Functions that can fail return 0 (or a count) on success and a negative errno on failure.
 *   - A server runs one or more loops (ug_config.threads), each on its own thread: loop 0 on
 *     the thread that calls ug_server_run, the others on threads it starts. A connection, and
 *     every request on it, belongs to one loop. "Loop thread" means the thread of the loop
 *     that owns the object in question. Unless a declaration says otherwise, a function may
 *     be called only from that thread (that includes handlers, timer callbacks and cancel
 *     callbacks, which always run there).
 *   - The library installs no signal handlers and keeps no global mutable state: two servers
 *     in one process are independent (each needs its own thread to run in).
 */
#ifndef UGATE_H
#define UGATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UG_VERSION_MAJOR 0
#define UG_VERSION_MINOR 1
#define UG_VERSION_PATCH 0

/** A server: one listening socket, and one or more event loops (one thread each). */
typedef struct ug_server ug_server;

/** A request in progress. Valid from the handler call until the response is complete
 *  (ug_resp_send / ug_resp_end returned) or the cancel callback has returned, whichever
 *  comes first; after that the pointer must not be used. To find a request again from
 *  deferred work that may outlive it, keep ug_req_id() and call ug_req_find(). */
typedef struct ug_request ug_request;

/** A read-only view of bytes owned by someone else (never NUL-terminated). ptr is NULL
 *  when the thing viewed is absent. */
typedef struct ug_str {
    const char *ptr;
    size_t len;
} ug_str;

/* ------------------------------------------------------------------------------------------
 * Configuration
 * ---------------------------------------------------------------------------------------- */

typedef enum ug_backend_kind {
    UG_BACKEND_AUTO = 0, /**< io_uring if the kernel allows it, else epoll (logged once) */
    UG_BACKEND_URING,
    UG_BACKEND_EPOLL,
} ug_backend_kind;

typedef enum ug_log_level {
    UG_LOG_ERROR = 0,
    UG_LOG_WARN,
    UG_LOG_INFO,
    UG_LOG_DEBUG,
} ug_log_level;

/** Log sink. Called on the loops' threads, by several at once when ug_config.threads > 1 (so
 *  it must be thread-safe; one write(2) or fprintf per line is), or inside
 *  ug_server_create. msg is NUL-terminated and valid only during the call. */
typedef void (*ug_log_fn)(void *user, ug_log_level level, const char *msg);

/** For limits that can be switched off explicitly (0 means "the default"). */
#define UG_UNLIMITED UINT32_MAX

/** ug_config.threads: as many loops as CPUs in the process's affinity mask. */
#define UG_THREADS_AUTO UINT32_MAX
/** Most loops a server runs. */
#define UG_MAX_LOOPS 256u

/** Longest ug_config.server_name. */
#define UG_SERVER_NAME_MAX 128

/** Server configuration. Fill with ug_config_init() and change what you need; the server
 *  copies it (strings included) in ug_server_create(). Limits of 0 mean "use the default"
 *  unless the field says otherwise. */
typedef struct ug_config {
    const char *host;        /**< address to bind; "127.0.0.1". IPv6 literals are accepted. */
    uint16_t port;           /**< 8080; 0 picks a free port (read it with ug_server_port()) */
    int backlog;             /**< listen(2) backlog; 4096 */
    int listen_fd;           /**< -1, or an already listening socket the server takes over
                                  when ug_server_create succeeds (it sets O_NONBLOCK and will
                                  close it); if create fails it stays the caller's, open.
                                  host/port/backlog are then ignored. A socket filter left on
                                  it (a predecessor that died while its gate was closing
                                  leaves the SYN filter) is detached. ug_server_create fails
                                  with -EINVAL if it is not a listening stream socket.
                                  Inherited from systemd or a predecessor: see
                                  ug_shutdown_opts.handoff */
    ug_backend_kind backend; /**< UG_BACKEND_AUTO */
    uint32_t threads;        /**< loops, one thread each; 1. UG_THREADS_AUTO: one per CPU of
                                  the affinity mask. Loop 0 accepts every connection and hands
                                  each to the loop with the fewest (docs/threads.md) */
    int pin_cpus;            /**< non-zero: loop i runs on the i-th CPU of the affinity mask
                                  (loop 0's is the thread that calls ug_server_run) */

    uint32_t max_conns;        /**< concurrent connections, all loops together; 16384, at
                                    most 16,773,119. Slots are reserved as address space
                                    (max_conns in each loop, since any loop may take them
                                    all) and only touched when used. */
    uint32_t max_header_bytes; /**< request line + header section; 8192, at most 65536.
                                    Over it: 431 (414 when the URI alone is over max_uri_bytes) */
    uint32_t max_headers;      /**< header fields per request; 64. Over it: 431 */
    uint32_t max_uri_bytes;    /**< request-target length; 4096. Over it: 414 */
    uint64_t max_body_bytes;   /**< request body; 1 MiB. Over it: 413 */
    uint32_t max_output_bytes; /**< unsent response bytes per connection; 256 KiB. Past it the
                                    server parses no more of that client's pipelined requests
                                    and stops reading from it, until the output drains to a
                                    quarter: a client that does not read costs at most this
                                    (plus what it already sent). Not a limit on one response;
                                    a stream's own bound is ug_resp_write's -ENOBUFS. */

    /* Timeouts: 0 disables one (not recommended on the internet). */
    uint32_t idle_timeout_ms; /**< keep-alive wait for the next request's first byte; 60000 */
    uint32_t read_header_timeout_ms; /**< from a request's first byte to the end of its
                                          header section; 10000 → 408 and close */
    uint32_t body_timeout_ms;        /**< longest gap between two reads of a body; 30000 → 408 */
    uint32_t write_timeout_ms;       /**< a send that makes no progress this long closes; 30000 */
    uint32_t handler_timeout_ms;     /**< a deferred request not answered (nor streaming) this long
                                          after dispatch is answered 503 by the server and its
                                          cancel callback fires (UG_CANCEL_TIMEOUT); 30000. 503,
                                          not 504: the server itself could not answer in time,
                                          no upstream is implied. A late answer finds nothing:
                                          ug_req_find returns NULL (counted as late_responses). */
    uint32_t max_inflight;   /**< requests dispatched and not yet answered; 8192, split evenly
                                  between the loops (no shared counter on the request path;
                                  each share rounded up, so the total may pass it by up to
                                  threads - 1, and a loop sheds at its share however busy the
                                  others are).
                                  Past it a new request is answered 503 with Retry-After: 1
                                  (load shedding). UG_UNLIMITED: no limit. */
    uint32_t linger_ms;      /**< how long a connection closed by the server keeps reading (and
                                  discarding, or during a drain, serving) what the client already
                                  sent, so that the client sees our response and FIN instead of a
                                  reset; 1000. See the guarantee above ug_server_run. */
    uint32_t gate_settle_ms; /**< when the gate closes, how long the listener (already
                                  dropping new SYNs) waits for handshakes under way before it
                                  closes; 1. Loopback and LAN handshakes take microseconds;
                                  raise it to your clients' RTT for WAN clients. See
                                  ug_server_shutdown. 0 closes at once. */

    uint32_t ring_entries;     /**< each loop's backend queue depth: operations submitted at
                                    once, or events taken per wait; 1024 */
    uint32_t recv_buffers;     /**< provided receive buffers shared by the connections of a
                                    loop, per loop (4 MiB each by default); 1024 */
    uint32_t recv_buffer_size; /**< bytes each; 4096 */

    int request_ids;         /**< non-zero: every request dispatched gets a request id: the
                                  client's X-Request-Id if it is 1 to UG_REQUEST_ID_MAX
                                  characters of [A-Za-z0-9._~+/=:-], else one generated
                                  unique in the process (revealing nothing of the server);
                                  it is read with ug_req_request_id, the access log appends
                                  it, and it is set on the response as X-Request-Id: replace
                                  it with ug_resp_header_set (ug_resp_header would add a
                                  second), which changes neither ug_req_request_id nor the
                                  log, and the core's own 500 and 503 set the original
                                  again. 0 (off) */
    const char *server_name; /**< value of the Server header; "ugate". NULL: no header. At
                                  most UG_SERVER_NAME_MAX bytes of visible ASCII and spaces
                                  (else ug_server_create fails with -EINVAL) */
    ug_log_fn log;           /**< NULL: errors and warnings go to stderr */
    void *log_user;
} ug_config;

/** Fill cfg with the defaults documented above. Any thread. */
void ug_config_init(ug_config *cfg);

/* ------------------------------------------------------------------------------------------
 * Server lifecycle
 * ---------------------------------------------------------------------------------------- */

/** Create a server: validate cfg, set up the backend, bind and listen (so the port is known
 *  and connections queue in the kernel at once, even before ug_server_run). Any thread.
 *  On success *out owns everything; free it with ug_server_free. Errors: -EINVAL (bad config),
 *  -EADDRINUSE, -ENOMEM, -ENOSYS/-EPERM (backend refused by the kernel), ... */
int ug_server_create(ug_server **out, const ug_config *cfg);

/** Free a server that is not running (ug_server_run never called, or returned). Closes the
 *  listener if still open. Any thread, but not concurrently with any other call on it.
 *  With the io_uring backend, a blocking call with a timeout in a thread that created or ran
 *  a loop may return EINTR once, shortly after this call (the kernel's teardown notifies those
 *  threads: docs/io_uring.md). Retry on EINTR. */
void ug_server_free(ug_server *srv);

/** The bound port (useful with port 0). Any thread. */
uint16_t ug_server_port(const ug_server *srv);

/** The backend actually in use: "io_uring" or "epoll". Static string. Any thread. */
const char *ug_server_backend(const ug_server *srv);

/** The number of loops (ug_config.threads, resolved). Any thread. */
unsigned ug_server_loops(const ug_server *srv);

/* ------------------------------------------------------------------------------------------
 * Routing and handlers
 * ---------------------------------------------------------------------------------------- */

/** What a handler tells the server when it returns. */
typedef enum ug_handler_result {
    /** The handler has responded (ug_resp_send, or ug_resp_start ... ug_resp_end). If it has
     *  not, that is a bug: the server answers 500, closes the connection and counts it in
     *  ug_stats.handler_no_response. */
    UG_DONE = 0,
    /** The handler will respond later, from its loop's thread: a timer (ug_req_timer), work
     *  posted back with ug_req_post (to the loop that owns the request, whichever it is), or
     *  its own I/O. It must also register a cancel callback if that work could outlive the
     *  client. */
    UG_LATER = 1,
} ug_handler_result;

/** A request handler. Runs on the loop thread; must not block. user is the pointer given to
 *  ug_route. Return UG_DONE or UG_LATER. */
typedef ug_handler_result (*ug_handler_fn)(ug_request *req, void *user);

#define UG_ROUTE_EXACT 0u  /**< path must equal the route's path */
#define UG_ROUTE_PREFIX 1u /**< path starts with the route's path */
/** The handler runs as soon as the head is in, before the body: it reads the body in pieces
 *  with ug_req_read_body (ug_req_body is empty). See "Streamed request bodies". */
#define UG_ROUTE_STREAM_BODY 2u

/** Register a route before ug_server_run. method is "GET", "POST", ... or NULL for any;
 *  a GET route also answers HEAD (the body is suppressed). path is copied. Routes are tried
 *  in registration order; the first match wins; no match → 404 (405 when only the method
 *  differs). Returns 0, -EINVAL, -ENOMEM, or -EBUSY once the server runs. Any thread before
 *  ug_server_run; not after. */
int ug_route(ug_server *srv, const char *method, const char *path, unsigned flags,
             ug_handler_fn handler, void *user);

/** The body limit of the route registered with exactly this method (NULL for the route
 *  registered with NULL) and path, instead of ug_config.max_body_bytes: 413 as soon as a
 *  Content-Length says more, or a chunked body passes it. A buffered route's is at most
 *  1 GiB (it is held in memory), a streamed route's is any size. 0 goes back to the
 *  server's. Returns 0, -EINVAL, -ENOENT (no such route), -EBUSY once the server runs. */
int ug_route_body_limit(ug_server *srv, const char *method, const char *path, uint64_t max_bytes);

/* ------------------------------------------------------------------------------------------
 * Middleware
 *
 * Each dispatched request runs a chain: the middlewares registered with ug_use (in
 * registration order), then those of its route (ug_route_use, in registration order), then
 * the route's handler, or the core's 404 / 405 when no route matched (so a request id,
 * logging or CORS middleware sees those too). Requests shed past max_inflight are answered
 * 503 before the chain. The order, for one request:
 *   1. the middlewares, each until one answers (short-circuit) or defers, and each that
 *      calls ug_next runs the next element inside that call (as in Go's net/http);
 *   2. the handler;
 *   3. when the response's last byte is queued, or the request ends otherwise: its
 *      completion callbacks (ug_req_on_complete), the last registered first, then the
 *      server's hooks (ug_server_on_complete) in registration order;
 *   4. then, only for a request that ended unanswered (client gone, deadline, timeout), its
 *      cancel callback.
 * Misuse is answered, counted in ug_stats.middleware_misuse and logged with the element's
 * name: ug_next called twice, or after the response was started (refused with -EALREADY);
 * a middleware returning UG_DONE without answering or passing on (answered 500, as a handler
 * that forgets is: ug_stats.handler_no_response); a second answer, or an answer from inside
 * a middleware's call after it passed the request on (refused: the first answer, or that of
 * the element holding the request, stands).
 * ---------------------------------------------------------------------------------------- */

/** A middleware's place in its request's chain, given to it and handed back to ug_next. A
 *  value: deferred work keeps a copy (request_id is ug_req_id, for ug_req_find). */
typedef struct ug_chain_pos {
    uint64_t request_id;
    uint32_t pos;
} ug_chain_pos;

/** A middleware. Runs on the loop thread, must not block, and does exactly one of:
 *  - answer (ug_resp_send, or ug_resp_start ...) and return UG_DONE: the rest of the chain
 *    does not run;
 *  - pass the request on, ug_next(req, next), and return UG_DONE (what follows in the chain
 *    answers, defers or passes on for itself; after ug_next returns the response may already
 *    be queued, so headers are set before the call);
 *  - return UG_LATER, then answer or call ug_next later, from its loop's thread (find the
 *    request again with ug_req_find(srv, next.request_id)): the handler timeout, the cancel
 *    callback and the drain deadline apply as to a deferred handler.
 *  Passing the request on clears its cancel callback: the next element sets its own. */
typedef ug_handler_result (*ug_middleware_fn)(ug_request *req, ug_chain_pos next, void *user);

/** Longest middleware name kept for the logs (longer ones are cut). */
#define UG_MIDDLEWARE_NAME_MAX 63

/** Add a middleware to every request's chain, before ug_server_run. name (copied) names it
 *  in the misuse logs. Returns 0, -EINVAL, -ENOMEM, -EBUSY once the server runs. */
int ug_use(ug_server *srv, const char *name, ug_middleware_fn fn, void *user);

/** Add a middleware to the chain of the route registered with exactly this method and path
 *  (as ug_route_body_limit finds it), after the global ones. Returns 0, -EINVAL, -ENOENT,
 *  -ENOMEM, -EBUSY once the server runs. */
int ug_route_use(ug_server *srv, const char *method, const char *path, const char *name,
                 ug_middleware_fn fn, void *user);

/** Pass the request on to the element after next's: it runs now, inside this call. Returns
 *  0 once it has run (it may have answered, deferred or passed on in turn); -EALREADY for
 *  misuse (this element already passed it on, or a response was started: nothing runs);
 *  -ESTALE if req is not next's request; -EINVAL. On the request's loop thread. */
int ug_next(ug_request *req, ug_chain_pos next);

/** Call fn when this request ends, however it ends, with the report a completion hook gets
 *  (the base for a logging or metrics middleware). At most UG_REQ_ON_COMPLETE_MAX per
 *  request; see the order above. Returns 0, -ENOSPC, or -EINVAL once the request has
 *  ended. On the request's loop thread. */
#define UG_REQ_ON_COMPLETE_MAX 8
/** What a completion callback or hook is told (below, with ug_server_on_complete). */
typedef struct ug_completion ug_completion;
/** A completion callback or hook: called once per request the server parsed (or refused),
 *  when it ends (see ug_completion.how); a request whose head was still arriving when its
 *  connection ended is not reported. req is the request (method, target, headers
 *  readable; for UG_END_REJECTED only what was parsed before the error, possibly nothing),
 *  valid during the call only; it must not be answered here. */
typedef void (*ug_completion_fn)(const ug_request *req, const ug_completion *info, void *user);
int ug_req_on_complete(ug_request *req, ug_completion_fn fn, void *user);

/* ------------------------------------------------------------------------------------------
 * Streamed request bodies (routes registered with UG_ROUTE_STREAM_BODY)
 *
 * The handler (after the middlewares) runs once the head is in. To read the body it calls
 * ug_req_read_body and returns UG_LATER: the body arrives in pieces, in order, each valid
 * during its call, Content-Length and chunked alike, the last one with end set. Memory stays
 * constant whatever the size: at most 256 KiB of a body is buffered before reading pauses,
 * and the rest waits in the kernel. Only then is "100 Continue" sent to a client that asked
 * for it: a handler that answers without reading never makes the client send the body.
 * - ug_req_body_pause / _resume hold the pieces back (while the handler writes to disk, say);
 *   while paused the handler timeout runs, otherwise the body timeout runs between pieces.
 * - A response started before the body's end closes the connection after it (the rest of
 *   the body is not read).
 * - Over the route's limit (ug_route_body_limit), or broken framing: the server answers 413
 *   or 400 (if no response was started) and the cancel callback fires (UG_CANCEL_BODY); the
 *   body timeout between two pieces answers 408 (UG_CANCEL_TIMEOUT); a client that goes
 *   away mid-body fires it with UG_CANCEL_CLIENT_GONE. No piece follows.
 * ---------------------------------------------------------------------------------------- */

/** A piece of a streamed body: data[0 .. len) (len may be 0 with end), valid during the call
 *  only. It may answer the request (then no piece follows), pause, or keep the bytes. */
typedef void (*ug_body_fn)(ug_request *req, const void *data, size_t len, int end, void *user);

/** Start reading the body: fn gets every piece from the loop's next turn on. One reader per
 *  request: a middleware that reads the body owns it, and the handler after it gets
 *  -EALREADY. While the body is read the handler timeout does not run; it runs, from the
 *  start each time, while the body is paused and after its end. Returns 0;
 *  -EINVAL if the route does not stream its body or the request has ended; -EALREADY if
 *  called before. A request with no body gets one call, (0 bytes, end). Loop thread. */
int ug_req_read_body(ug_request *req, ug_body_fn fn, void *user);
/** Hold back the next pieces (from inside the callback too), and let them come again.
 *  Return 0 or -EINVAL (not reading a body, or its end was seen). Loop thread. */
int ug_req_body_pause(ug_request *req);
int ug_req_body_resume(ug_request *req);
/** A chunked body's trailer field (case-insensitive), once the piece with end has come;
 *  ptr NULL if absent. Valid until the handler returns to the loop. */
ug_str ug_req_trailer(const ug_request *req, const char *name);
/** Body bytes handed out so far (de-chunked). */
uint64_t ug_req_body_bytes(const ug_request *req);

/* ------------------------------------------------------------------------------------------
 * Requests (all views point into the connection's buffer and share the request's lifetime)
 * ---------------------------------------------------------------------------------------- */

ug_str ug_req_method(const ug_request *req);
/** The request-target as sent ("/a/b?x=1"). */
ug_str ug_req_target(const ug_request *req);
/** The target up to '?', and after it (ptr NULL when there is no '?'). Not percent-decoded. */
ug_str ug_req_path(const ug_request *req);
ug_str ug_req_query(const ug_request *req);
/** Value of the query parameter key (first match), not decoded; ptr NULL if absent. */
ug_str ug_req_query_param(const ug_request *req, const char *key);
/** The effective authority (RFC 9112 3.2): the absolute-form target's authority if the
 *  target has one, else the Host header's value (checked: host [":" port], no userinfo);
 *  ptr NULL only for an HTTP/1.0 request without Host. Not lower-cased. */
ug_str ug_req_authority(const ug_request *req);
/** HTTP minor version: 0 or 1. */
int ug_req_http_minor(const ug_request *req);
/** First header named name (case-insensitive); ptr NULL if absent. Values are trimmed. */
ug_str ug_req_header(const ug_request *req, const char *name);
/** Number of header fields, and the i-th (0-based) one. Returns 0 or -ERANGE. */
size_t ug_req_header_count(const ug_request *req);
int ug_req_header_at(const ug_request *req, size_t i, ug_str *name, ug_str *value);
/** The whole request body (de-chunked), empty if none. */
ug_str ug_req_body(const ug_request *req);
/** Longest client X-Request-Id taken as the request id (ug_config.request_ids). */
#define UG_REQUEST_ID_MAX 128
/** The request id (ug_config.request_ids): the client's X-Request-Id, or the one generated;
 *  ptr NULL when request ids are off or the request was refused before dispatch. */
ug_str ug_req_request_id(const ug_request *req);
/** The server this request belongs to. */
ug_server *ug_req_server(const ug_request *req);

/** A request's identity: never 0, unique among this server's requests (the loop's index is
 *  part of it) until the loop that owns it has dispatched 2^32 - 1 more requests. */
uint64_t ug_req_id(const ug_request *req);
/** The loop the request belongs to (0 .. ug_server_loops() - 1). */
unsigned ug_req_loop(const ug_request *req);
/** The request with that id if it is still waiting for its response, else NULL (it was
 *  answered, cancelled or timed out). The safe way to respond from deferred work. On the
 *  thread of the loop that owns the request: get there with ug_req_post. */
ug_request *ug_req_find(ug_server *srv, uint64_t id);

/** Why a request was cancelled. */
typedef enum ug_cancel_reason {
    UG_CANCEL_CLIENT_GONE = 1, /**< the peer closed or reset the connection */
    UG_CANCEL_DEADLINE,        /**< the shutdown deadline forced the connection closed */
    UG_CANCEL_SERVER_FREE,     /**< the server stopped with the request unanswered */
    UG_CANCEL_TIMEOUT,         /**< handler_timeout_ms passed: the server answered 503 */
    UG_CANCEL_SERVER_ERROR,    /**< the server could not go on with the connection (out of
                                    memory or submission slots; counted in conns_failed) */
    UG_CANCEL_BODY,            /**< a streamed body broke its framing (400) or its limit
                                    (413); UG_CANCEL_TIMEOUT is its body timeout (408) */
} ug_cancel_reason;

/** Called once, on the loop thread, when a deferred request will never be answered. After it
 *  returns the request pointer is invalid; drop whatever work was started for it. */
typedef void (*ug_cancel_fn)(ug_request *req, ug_cancel_reason why, void *user);

/** Set (or replace, or clear with NULL) the request's cancel callback. */
void ug_req_on_cancel(ug_request *req, ug_cancel_fn fn, void *user);

/** Timer callback for ug_req_timer. */
typedef void (*ug_req_timer_fn)(ug_request *req, void *user);

/** Call fn(req, user) on the loop thread after ms milliseconds, unless the request ends first
 *  (then the timer is dropped silently). One timer per request; a second call replaces it.
 *  Returns 0 or -ENOMEM. */
int ug_req_timer(ug_request *req, uint32_t ms, ug_req_timer_fn fn, void *user);

/* ------------------------------------------------------------------------------------------
 * Responses. A request is answered exactly once: either ug_resp_send, or ug_resp_start,
 * any number of ug_resp_write, then ug_resp_end. Calls after that return -EALREADY;
 * ug_resp_send or ug_resp_start during a stream return -EINVAL. A 204 or 304 stream has no
 * body: writes are dropped. Bytes passed in are copied; the caller keeps ownership.
 * ---------------------------------------------------------------------------------------- */

/** Add a response header (before ug_resp_send / ug_resp_start). Name and value are copied.
 *  -EINVAL if either contains CR, LF or NUL (header injection) or the name is empty. The
 *  server sets Date, Server, Content-Length / Transfer-Encoding and Connection itself. */
int ug_resp_header(ug_request *req, const char *name, const char *value);

/* The response headers stay a list until the head is written (ug_resp_send or
 * ug_resp_start), in the order added: they can be read, replaced and removed until then.
 * Views returned point into the list and are valid until it changes. Names compare
 * case-insensitively. After the head is written the list is empty (-EALREADY for changes). */

/** The first value of the response header name added so far; ptr NULL if none. */
ug_str ug_resp_header_get(const ug_request *req, const char *name);
/** Replace every response header named name with one, or add it: as ug_resp_header, and
 *  on an error the list is as it was. */
int ug_resp_header_set(ug_request *req, const char *name, const char *value);
/** Remove every response header named name: how many (0 if none), -EINVAL, -EALREADY. */
int ug_resp_header_remove(ug_request *req, const char *name);
/** The response headers added so far: how many, and the i-th (0-based): 0 or -ERANGE. */
size_t ug_resp_header_count(const ug_request *req);
int ug_resp_header_at(const ug_request *req, size_t i, ug_str *name, ug_str *value);

/** Send a complete response: status 200 to 599 (-EINVAL otherwise). content_type may be NULL
 *  (no Content-Type). For HEAD requests the body is not sent (Content-Length still says its
 *  size). */
int ug_resp_send(ug_request *req, int status, const char *content_type, const void *body,
                 size_t len);

/** Start a streamed response: the status line and headers go out now, the body follows in
 *  chunks (Transfer-Encoding: chunked; for an HTTP/1.0 client the body is delimited by the
 *  connection closing). */
int ug_resp_start(ug_request *req, int status, const char *content_type);
/** Queue one chunk of a streamed body (len 0 is a no-op). -ENOBUFS when more than 8 MiB are
 *  queued unsent: the client is not reading; wait (e.g. on a timer) and try again. */
int ug_resp_write(ug_request *req, const void *data, size_t len);
/** Finish a streamed response. The request pointer is invalid after this returns. */
int ug_resp_end(ug_request *req);

/* ------------------------------------------------------------------------------------------
 * Loop-thread services
 * ---------------------------------------------------------------------------------------- */

typedef void (*ug_post_fn)(ug_server *srv, void *user);

/** Run fn(srv, user) on loop 0's thread soon. Any thread (not a signal handler: it may
 *  allocate), from ug_server_create's return until ug_server_free is called: the caller must
 *  make sure no call is in progress or starts once ug_server_free begins (join the threads
 *  that post first); after ug_server_run has returned, calls are safe and fail. Returns 0,
 *  -EINVAL, -ENOMEM, or -ESHUTDOWN once that loop has ended. Posted work still queued when
 *  a loop ends runs before it ends; work posted before ug_server_run and never run (the
 *  server was freed without running) is dropped by ug_server_free. */
int ug_server_post(ug_server *srv, ug_post_fn fn, void *user);
/** The same, on the given loop's thread. */
int ug_server_post_loop(ug_server *srv, unsigned loop, ug_post_fn fn, void *user);
/** The same, on the thread of the loop that owns request id (whether or not the request is
 *  still waiting: fn calls ug_req_find to know). -EINVAL for an id no loop can own (0, or a
 *  loop index past ug_server_loops()). */
int ug_req_post(ug_server *srv, uint64_t id, ug_post_fn fn, void *user);

/* ------------------------------------------------------------------------------------------
 * Running and shutdown
 * ---------------------------------------------------------------------------------------- */

/** The accept gate's state. Transitions go only forward, each made once. */
typedef enum ug_gate_state {
    UG_GATE_OPEN = 0,  /**< accepting */
    UG_GATE_LAME_DUCK, /**< shutdown requested with a drain delay: still accepting, /healthz
                            routes should answer 503, responses carry Connection: close */
    UG_GATE_DRAINING,  /**< no new connection is taken; requests in progress finish */
    UG_GATE_CLOSED,    /**< every connection has ended; ug_server_run returns */
} ug_gate_state;

/** Options for ug_server_shutdown. Zero-initialise, then set what you need. */
typedef struct ug_shutdown_opts {
    uint32_t drain_delay_ms;   /**< lame-duck period before the gate closes; 0 */
    uint32_t drain_timeout_ms; /**< deadline for the drain, from the gate closing; 0 = 30000 */
    int immediate;             /**< non-zero: close every connection now (deadline 0) */
    int handoff;               /**< non-zero: the listening socket is shared with a process
                                    that goes on accepting (a successor, or systemd holding
                                    a socket unit). The gate stops this server's accepts and
                                    serves those that raced the cancel, and the drain is the
                                    same, but the socket's queue is left to the others: no
                                    SYN filter, no draining of the queue into this process,
                                    only its own descriptor closed. With nobody else holding
                                    the socket, what is queued would be reset: the default
                                    (0) is the final close described above ug_server_run.
                                    Never selected by itself, inherited socket or not. */
} ug_shutdown_opts;

/** What a run ended with. */
typedef struct ug_report {
    uint64_t conns_at_close;       /**< connections open when the gate closed */
    uint64_t conns_drained;        /**< ... of which ended normally during the drain */
    uint64_t conns_forced;         /**< ... of which the deadline closed */
    uint64_t requests_drained;     /**< requests answered after the gate closed */
    uint64_t requests_forced;      /**< requests the deadline cancelled unanswered */
    uint64_t accepted_at_close;    /**< connections taken from the accept queue while closing
                                        (accept CQEs racing the cancel, and the backlog drain) */
    uint64_t accepted_after_close; /**< connections accepted after the close point: always 0 */
    uint64_t holds_forced;         /**< holds (ug_server_hold) dropped by the deadline */
    uint64_t lame_duck_us;         /**< time in LAME_DUCK */
    uint64_t close_us;             /**< from the gate closing to the listener being closed */
    uint64_t drain_us;             /**< from the gate closing to the last connection ending */
} ug_report;

/* The guarantee, precisely. Both backends give all of it: "the accept" is one accept
 * operation that takes connection after connection until it is cancelled (io_uring's
 * multishot accept; with epoll, the listener's registration and accept4() on readiness, whose
 * cancel is a synchronous deregistration, so no accept can race it). The rest (SYN filter,
 * queue drain, settle, close) is the same code. Backpressure (max_conns, EMFILE) pauses the
 * accept the same way: clients wait in the backlog.
 *
 *  - The close point is the moment loop 0 closes the gate (DRAINING): one point for the
 *    server, whatever the number of loops, since loop 0 alone accepts (and hands each
 *    connection to a loop). From then on the server takes a connection only if it was
 *    accepted by the kernel before the close point: accept completions already posted when
 *    the cancel is submitted, then, after the cancel's final completion, the connections
 *    whose handshake completed and wait in the listener's accept queue (taken with accept4()
 *    until EAGAIN).
 *  - Before taking the queue, the listener starts dropping new SYNs (a socket filter), so the
 *    queue cannot refill; handshakes already under way get gate_settle_ms to finish and are
 *    taken too; then the listener is closed and later clients get ECONNREFUSED at once.
 *  - The remaining window: a client whose SYN arrives during the settle is not answered; it
 *    retransmits about a second later and is refused then (delayed, never reset). A client
 *    whose handshake began before the close point but whose final ACK arrives more than
 *    gate_settle_ms later (an RTT longer than the settle) is reset when the listener closes.
 *    The kernel offers no atomic "close after the queue is empty", and the filter is what
 *    keeps the window this small. Where SO_ATTACH_FILTER is refused, the listener closes
 *    right after the queue is drained and the window is the few microseconds in between.
 *  - Every connection taken is served: the request in progress and the pipelined requests
 *    already received are answered (the last with Connection: close); an idle keep-alive
 *    connection lingers linger_ms, and a request that races in then is answered with
 *    Connection: close (RFC 9112 §9.6); then our FIN goes out and we read until the client's.
 *    The default linger (1 s) is longer than a busy client's gap between requests and short
 *    enough for a rolling deploy; a client idle for all of it can still race our FIN, as with
 *    any HTTP/1.1 server closing an idle connection.
 *  - Every loop drains its own connections against the one deadline (set at the close point,
 *    armed on each loop). The run returns as soon as the last connection of every loop has
 *    ended and no hold is outstanding, or at the deadline: then every unanswered request's
 *    cancel callback fires
 *    (UG_CANCEL_DEADLINE), its I/O is cancelled, its connection closed, and the counts are in
 *    the report. report.accepted_after_close counts connections accepted after the listener
 *    closed: zero by construction, checked. */

/** Run the server until it is CLOSED (after ug_server_shutdown): loop 0 on the calling
 *  thread, the other loops on threads started here and joined before it returns. Fills
 *  *report (summed over the loops) if not NULL. Returns 0 when everything drained, 1 when
 *  the deadline forced anything, or a negative errno if a loop failed (the server is then
 *  CLOSED as well: every connection closed, every pending request cancelled). Call at most
 *  once. */
int ug_server_run(ug_server *srv, ug_report *report);

/** A shutdown hook: called on loop 0's thread when the gate enters LAME_DUCK (only if there
 *  is a drain delay) and when it enters DRAINING, with that state. */
typedef void (*ug_shutdown_hook_fn)(ug_server *srv, ug_gate_state state, void *user);

/** Register a shutdown hook before ug_server_run (any thread before it, not after). Hooks run
 *  in registration order. Returns 0, -EINVAL, -ENOMEM, or -EBUSY once the server runs. */
int ug_server_on_shutdown(ug_server *srv, ug_shutdown_hook_fn fn, void *user);

/** Hold the drain open: the server does not reach CLOSED while holds are outstanding, even
 *  with no connection left (e.g. a hook must first end a long-poll or flush a queue). Bounded
 *  by the drain deadline, which drops every hold (counted in ug_report.holds_forced). Any
 *  loop's thread. Returns 0, -ESHUTDOWN once CLOSED or forced (the deadline passed, or an
 *  immediate shutdown), or -EOVERFLOW with 2^31 - 1 holds outstanding. */
int ug_server_hold(ug_server *srv);
/** Give one hold back. When the last one goes and no connection is left, the run returns.
 *  Any loop's thread. Returns 0, or -EINVAL if no hold is outstanding (including a hold the
 *  deadline has already dropped: releasing it late is harmless). */
int ug_server_release(ug_server *srv);

/** Longest label of a labelled hold (longer ones are cut), and the most distinct labels
 *  outstanding at once. */
#define UG_HOLD_LABEL_MAX 64
#define UG_HOLD_LABELS_MAX 32
/** ug_server_hold with a label saying what holds the drain open ("flush-queue"): the live
 *  dump lists the outstanding holds by label, and the deadline logs one line per label it
 *  drops. label is copied. Any loop's thread, as ug_server_hold. Returns what
 *  ug_server_hold does, or -EINVAL (NULL or empty label), -ENOSPC with UG_HOLD_LABELS_MAX
 *  other labels outstanding. Not for a hot path: it takes a mutex. */
int ug_server_hold_label(ug_server *srv, const char *label);
/** Give back one hold taken with that label (not with ug_server_release, which would leave
 *  the label listed). Any loop's thread. 0, or -EINVAL if no hold with that label is
 *  outstanding (or the deadline has dropped it). */
int ug_server_release_label(ug_server *srv, const char *label);

/** Ask the server to shut down. Any thread, and async-signal-safe: it only stores to atomics
 *  and writes to an eventfd. opts may be NULL (defaults). The first call decides the delay and
 *  timeout; later calls are harmless, except that one with immediate set forces an
 *  immediate close even after a graceful shutdown has begun. Returns 0, or -ESHUTDOWN if the
 *  server is already CLOSED. */
int ug_server_shutdown(ug_server *srv, const ug_shutdown_opts *opts);

/** A new descriptor for the listening socket (dup, close-on-exec set), to hand to a
 *  successor (dup2 it to the descriptor the successor expects, which clears close-on-exec)
 *  or to keep the socket open across a restart. The caller owns it. Any thread, but not
 *  concurrently with ug_server_free. Returns the descriptor, or -EBADF once the gate has
 *  begun to close (the socket may then carry the SYN filter), -errno from dup. */
int ug_server_dup_listener(ug_server *srv);

/** The gate state. Any thread. */
ug_gate_state ug_server_state(const ug_server *srv);

/* ------------------------------------------------------------------------------------------
 * Hooks: connection states and request completions. Each costs a test of a count when none
 * is registered. Register before ug_server_run (any thread before it, not after); they run
 * on the loop thread of the connection, in registration order, and must not block.
 * ---------------------------------------------------------------------------------------- */

/** A connection's state, as Go's net/http ConnState has it. */
typedef enum ug_conn_state {
    UG_CS_NEW = 0, /**< accepted, no request byte yet */
    UG_CS_ACTIVE,  /**< a request's first byte arrived (from NEW or IDLE) */
    UG_CS_IDLE,    /**< every request answered, waiting for the next one (keep-alive), or
                        lingering idle through a drain */
    UG_CS_CLOSED,  /**< closed; its id is not reported again */
} ug_conn_state;

/** What a connection-state hook is told. Valid during the call only. */
typedef struct ug_conn_info {
    uint64_t conn_id;    /**< unique among this server's connections until its loop has
                              reused the same slot 2^32 times */
    unsigned loop;       /**< the loop that owns it */
    uint32_t slot;       /**< its slot in that loop: below ug_server_conn_slots(), reused
                              after CLOSED (an index for per-connection tables) */
    ug_conn_state state; /**< the state it entered */
    const void *peer;    /**< UG_CS_NEW only: the client's address, a struct sockaddr of
                              peer_len bytes (NULL if the kernel would not say); else NULL */
    uint32_t peer_len;
    uint64_t requests;  /**< requests dispatched on it so far */
    uint64_t bytes_in;  /**< bytes received from the client so far */
    uint64_t bytes_out; /**< bytes sent to it so far */
} ug_conn_info;

typedef void (*ug_conn_state_fn)(ug_server *srv, const ug_conn_info *info, void *user);

/** Register a connection-state hook. With one registered, the server asks the kernel for
 *  each new connection's peer address (one getpeername(2) per connection). Returns 0,
 *  -EINVAL, -ENOMEM, or -EBUSY once the server runs. */
int ug_server_on_conn_state(ug_server *srv, ug_conn_state_fn fn, void *user);

/** How a request ended. */
typedef enum ug_request_end {
    UG_END_ANSWERED = 0, /**< its response was queued whole (the handler's, or the core's
                              404, 405 or 500), or cut short and the connection closed (a
                              handler that returned UG_DONE mid-stream); queued, not
                              necessarily delivered */
    UG_END_REJECTED,     /**< the parser refused it (400, 408, 413, 414, 431, 501, 505) */
    UG_END_SHED,         /**< answered 503 past max_inflight */
    UG_END_TIMED_OUT,    /**< answered 503 at handler_timeout_ms */
    UG_END_CANCELLED,    /**< never answered: the drain deadline, the server stopping or
                              failing (cancel_reason says which) */
    UG_END_CLIENT_GONE,  /**< never answered (or cut mid-stream): the client closed, reset,
                              or stopped reading past write_timeout_ms */
} ug_request_end;

/** What a completion hook is told. Valid during the call only. */
struct ug_completion {
    uint64_t request_id; /**< ug_req_id(), or 0 for a request the parser refused */
    uint64_t conn_id;    /**< as in ug_conn_info */
    unsigned loop;
    uint32_t slot;
    ug_request_end how;
    ug_cancel_reason cancel_reason; /**< UG_END_CANCELLED and UG_END_CLIENT_GONE: why */
    int status;                     /**< the response's status, 0 if none was started */
    uint64_t bytes_in;              /**< the request's bytes parsed (head and body) */
    uint64_t bytes_out;             /**< the response's bytes queued (head and body) */
    uint64_t duration_ns; /**< from the server starting to read the request (its first byte;
                               for a pipelined request, the answer to the one before it) to
                               the response's last byte queued for sending, or to the end */
};

/** Register a completion hook. Returns 0, -EINVAL, -ENOMEM, or -EBUSY once the server runs. */
int ug_server_on_complete(ug_server *srv, ug_completion_fn fn, void *user);

/** Connection slots per loop (the bound of ug_conn_info.slot). Any thread. */
uint32_t ug_server_conn_slots(const ug_server *srv);

/* ------------------------------------------------------------------------------------------
 * Access log (built on the completion and connection-state hooks)
 * ---------------------------------------------------------------------------------------- */

typedef struct ug_access_log ug_access_log;

/** Log every request of srv to fd in the Combined Log Format, with the duration in seconds
 *  and the request id appended: 127.0.0.1 - - [01/Dec/2026:16:50:00 +0000] "GET / HTTP/1.1"
 *  200 13 "-" "curl" 0.000 - (times in UTC; "-": no request id, ug_config.request_ids). Lines are
 * formatted on the loops into per-loop buffers and written by a thread of the log's own: the loops
 * never wait for fd. They are written at least once a second, and when a loop's buffer fills; if
 * the writer falls a whole buffer behind, lines are dropped and counted (ug_access_log_dropped).
 * Create before ug_server_run (it registers hooks); any thread. fd stays the caller's. Returns 0,
 * -EINVAL, -ENOMEM, -EBUSY (the server runs), or the error of starting the thread. */
int ug_access_log_create(ug_access_log **out, ug_server *srv, int fd);
/** Lines dropped so far. Any thread. */
uint64_t ug_access_log_dropped(const ug_access_log *log);
/** Write what is buffered, stop the writer and free the log. After ug_server_run has
 *  returned (or, if it never ran, instead of running it) and before ug_server_free. It waits
 *  for the writer's last write: fd should be a file, or a pipe that is read. Returns 0, or
 *  the first write error (-errno; the lines of a buffer whose write failed are counted in
 *  ug_access_log_dropped, and writing goes on with the next). */
int ug_access_log_free(ug_access_log *log);

/* ------------------------------------------------------------------------------------------
 * Counters
 * ---------------------------------------------------------------------------------------- */

/** The counters and gauges of ug_stats, one line each: X(field, kind, metric, help), where
 *  kind is COUNTER (only grows) or GAUGE (a level, now), metric is the Prometheus name
 *  without its ugate_ prefix and _total suffix (ug_server_metrics), and help says what it
 *  counts. The struct's fields and the exposition are both generated from this list, so a
 *  new counter is one line here (and its increments in the core). */
#define UG_STATS_FIELDS(X)                                                                         \
    X(conns_accepted, COUNTER, connections_accepted, "Connections accepted.")                      \
    X(conns_closed, COUNTER, connections_closed, "Connections closed.")                            \
    X(conns_open, GAUGE, connections_open, "Connections open now, on every loop.")                 \
    X(requests, COUNTER, requests_read,                                                            \
      "Requests parsed and dispatched, or answered with an error by the parser.")                  \
    X(bad_requests, COUNTER, bad_requests,                                                         \
      "Requests answered 400, 413, 414, 431, 501 or 505 by the parser.")                           \
    X(handler_no_response, COUNTER, handler_no_response,                                           \
      "Handlers that returned UG_DONE without responding (answered 500).")                         \
    X(middleware_misuse, COUNTER, middleware_misuse,                                               \
      "Misused chains: next called twice or after the response started, a middleware "             \
      "returning without answering or passing on (500), a second answer. Each is logged.")         \
    X(requests_cancelled, COUNTER, requests_cancelled, "Cancel callbacks fired.")                  \
    X(conns_reset, COUNTER, connections_reset,                                                     \
      "Connections that ended with an error (reset, EPIPE, out of memory).")                       \
    X(timeouts_idle, COUNTER, timeouts_idle, "Keep-alive connections closed at the idle timeout.") \
    X(timeouts_read_header, COUNTER, timeouts_read_header,                                         \
      "Requests answered 408 at the read header timeout.")                                         \
    X(timeouts_body, COUNTER, timeouts_body, "Requests answered 408 at the body timeout.")         \
    X(timeouts_write, COUNTER, timeouts_write,                                                     \
      "Connections closed because a send made no progress for the write timeout.")                 \
    X(timeouts_handler, COUNTER, timeouts_handler,                                                 \
      "Deferred requests answered 503 at the handler timeout.")                                    \
    X(late_responses, COUNTER, late_responses,                                                     \
      "ug_req_find calls for a request already answered, cancelled or timed out (dropped).")       \
    X(shed, COUNTER, requests_shed, "Requests answered 503 past max_inflight (load shedding).")    \
    X(limit_header_bytes, COUNTER, limit_header_bytes,                                             \
      "Requests answered 431: header section over max_header_bytes.")                              \
    X(limit_headers, COUNTER, limit_headers, "Requests answered 431: more than max_headers.")      \
    X(limit_uri, COUNTER, limit_uri, "Requests answered 414: target over max_uri_bytes.")          \
    X(limit_body, COUNTER, limit_body, "Requests answered 413: body over max_body_bytes.")         \
    X(inflight, GAUGE, requests_inflight, "Requests dispatched and not answered yet, now.")        \
    X(accept_rearms, COUNTER, accept_rearms,                                                       \
      "Accepts re-armed after they ended by themselves (an overflow, an error).")                  \
    X(recv_rearms, COUNTER, recv_rearms,                                                           \
      "Receives re-armed after they ended by themselves (no buffer free, an overflow).")           \
    X(accept_errors, COUNTER, accept_errors, "Accept completions with an error.")                  \
    X(accept_pauses, COUNTER, accept_pauses,                                                       \
      "Accept paused at max_conns (clients wait in the backlog).")                                 \
    X(accept_resumes, COUNTER, accept_resumes, "Accept resumed after a pause.")                    \
    X(output_pauses, COUNTER, output_pauses,                                                       \
      "Reading a client paused: its unsent output passed max_output_bytes.")                       \
    X(input_pauses, COUNTER, input_pauses,                                                         \
      "Reading a client paused: 64 KiB arrived while one of its requests was being handled.")      \
    X(conns_failed, COUNTER, connections_failed,                                                   \
      "Connections ended because the server ran out of memory or submission slots for them.")      \
    X(stale_completions, COUNTER, stale_completions,                                               \
      "Completions for a connection slot that is gone (never expected).")

/** The counters (see UG_STATS_FIELDS for what each one counts), and the responses by class:
 *  responses[1] 1xx ... responses[5] 5xx ([0] unused). */
typedef struct ug_stats {
#define UG__STATS_FIELD(field, kind, metric, help) uint64_t field;
    UG_STATS_FIELDS(UG__STATS_FIELD)
#undef UG__STATS_FIELD
    uint64_t responses[6];
} ug_stats;

/** The counters, summed over the loops (each loop's are read without stopping it, so the
 *  sum is a moment's, not an atomic snapshot). Any thread. */
void ug_server_stats(const ug_server *srv, ug_stats *out);
/** One loop's counters (how the loops share the load). Any thread. 0 or -EINVAL. */
int ug_server_loop_stats(const ug_server *srv, unsigned loop, ug_stats *out);

/** The server's metrics in the Prometheus text exposition format (version 0.0.4): every
 *  field of UG_STATS_FIELDS as ugate_<metric>_total (counters) or ugate_<metric> (gauges),
 *  summed over the loops; ugate_requests_total{code} (responses by status code, the codes
 *  seen), ugate_responses_total{class="1xx".."5xx"}, ugate_connections{state},
 *  ugate_request_duration_seconds (a histogram), ugate_requests_deferred,
 *  ugate_oldest_deferred_age_seconds, ugate_holds, ugate_gate_state{state} (1 for the
 *  current state), the drain's figures (ugate_drain_*) and ugate_loops; README.md says what
 *  each means. Any thread, while the loops run (each loop's counters are read without
 *  stopping it). Writes at most cap bytes to buf, NUL-terminated; returns the length without
 *  the NUL, or -ENOSPC if cap is too small (about 9 KiB, and 55 bytes more per status code
 *  seen: 40 KiB is always enough), -EINVAL for a NULL argument. */
int ug_server_metrics(const ug_server *srv, char *buf, size_t cap);

/** A live view of the server as JSON: {"gate": {...}, "stats": {...}, "loops": [...],
 *  "connections": [...]} with the gate's state, the drain's progress and what it waits for
 *  (connections by state, holds by label, time to the deadline), every UG_STATS_FIELDS
 *  counter, and one entry per connection (id, loop,
 *  peer, state, age, idle time, bytes, requests, and the request in progress if any). Each
 *  loop writes its own part on its own thread (a post), so the view of one loop is
 *  consistent; that costs each loop a few microseconds per connection, during which it
 *  serves nothing. The call waits for each loop in turn, at most timeout_ms in all (0:
 *  1000). Any thread but the server's loops' (-EDEADLK). On success *out is a malloc'd,
 *  NUL-terminated string the caller frees, of *len bytes (len may be NULL). Returns 0,
 *  -ETIMEDOUT if a loop did not answer in time, -ENOMEM, -EINVAL. A loop that has not
 *  started or has ended is shown as such, without connections. */
int ug_server_debug_json(ug_server *srv, uint32_t timeout_ms, char **out, size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* UGATE_H */
