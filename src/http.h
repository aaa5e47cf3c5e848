/*
 * HTTP/1.1 request parser glue. http-parser (unmaintained upstream) reads the head, only
 * inside http.c, so it can be replaced without touching the connection code; the body framing
 * (Content-Length, chunked) is http.c's own.
 *
 * Model: a request is parsed from a contiguous, writable byte range that starts at the
 * request's first byte ("base"). The caller may move the bytes between calls (compaction)
 * and pass the new base: every span below is an offset from base, never a pointer. More
 * bytes are appended by the caller and ug__http_parse is called again with the larger
 * length; the parser resumes where it stopped. Chunked bodies are de-chunked in place, so
 * the body is always one span.
 */
#ifndef UG_HTTP_H
#define UG_HTTP_H

#include <stdint.h>

/* Offsets relative to the request's base. */
typedef struct ug__span {
    uint32_t off, len;
} ug__span;

typedef struct ug__http_header {
    ug__span name, value; /* value trimmed of leading/trailing spaces and tabs */
} ug__http_header;

typedef struct ug__http_limits {
    uint32_t max_header_bytes; /* request line + headers, including CRLFs */
    uint32_t max_headers;
    uint32_t max_uri_bytes;
    uint64_t max_body_bytes;
} ug__http_limits;

enum ug__http_result {
    UG_HTTP_NEED_MORE = 0,    /* everything given was consumed; call again with more */
    UG_HTTP_HEADERS_DONE = 1, /* header section complete (returned once per request, before
                                 any body byte is consumed); call again to go on */
    UG_HTTP_DONE = 2,         /* request complete; consumed = its length in bytes */
    UG_HTTP_ERROR = 3,        /* error_status says which status to answer; then close */
};

enum ug__http_flags {
    UG_HTTP_KEEP_ALIVE = 1u << 0, /* by HTTP/1.1 / 1.0 rules and the Connection header */
    UG_HTTP_CHUNKED = 1u << 1,
    UG_HTTP_EXPECT_CONTINUE = 1u << 2, /* "Expect: 100-continue" (HTTP/1.1 only) */
    UG_HTTP_HAS_BODY = 1u << 3,        /* Content-Length > 0 or chunked */
    UG_HTTP_HEAD = 1u << 4,            /* method is HEAD */
};

typedef struct ug__http_req {
    /* http-parser's state lives here, opaque to everyone but http.c (static-asserted there). */
    _Alignas(8) unsigned char parser_storage[40];

    const ug__http_limits *limits;
    ug__http_header *headers; /* caller-provided, capacity limits->max_headers */
    uint32_t nheaders;

    ug__span method;    /* "GET" ... (a view of the request bytes) */
    ug__span target;    /* request-target as sent */
    ug__span path;      /* target up to '?' */
    ug__span query;     /* after '?' (len 0 and off 0 when absent; see has_query) */
    ug__span authority; /* effective authority: the absolute-form target's, else Host's */
    uint8_t has_query;
    uint8_t has_authority; /* 0 only for HTTP/1.0 without Host */
    uint8_t http_major, http_minor;
    uint32_t flags;          /* ug__http_flags */
    uint64_t content_length; /* declared Content-Length, 0 if none or chunked */
    ug__span body;           /* de-chunked body (valid once UG_HTTP_DONE) */

    uint32_t ntrailers;       /* trailer fields, in headers[nheaders ...] (chunked only) */
    uint64_t body_limit;      /* de-chunked bytes allowed: limits->max_body_bytes, or the
                                 caller's (ug__http_body_begin) */
    uint64_t body_seen_;      /* de-chunked body bytes so far, handed out ones included */
    uint64_t body_dropped_;   /* streamed: raw body bytes dropped (ug__http_body_drop) */
    uint32_t consumed;        /* bytes of the request consumed so far, from base */
    uint32_t header_bytes;    /* length of request line + header section once HEADERS_DONE */
    int error_status;         /* 400, 413, 414, 431, 501, 505 with UG_HTTP_ERROR */
    const char *error_reason; /* short static text for logs/tests */
#define UG_HTTP_REASON_TOO_MANY_HEADERS "too many header fields"

    /* private bookkeeping for http.c */
    uint8_t phase_;          /* where the request is: head, body framing, done */
    uint32_t flags_;         /* what the head said so far */
    uint32_t cur_hdr_;       /* header being filled */
    uint32_t host_idx_;      /* 1 + index of the Host header, 0 if none */
    uint32_t body_write_;    /* where the next de-chunked body byte goes (offset from base) */
    uint64_t chunk_left_;    /* data bytes of the current chunk still to come */
    uint64_t body_left_;     /* streamed Content-Length body: bytes still to come */
    uint32_t trailer_start_; /* where the trailer section's first line starts */
    uint8_t stream_;         /* the body is parsed from its own buffer (ug__http_body_begin) */
    uint8_t body_begun_;
    uint32_t scan_; /* a line's end was looked for up to here (0: from consumed) */
} ug__http_req;

/* Prepare r for a new request. headers must hold limits->max_headers entries. */
void ug__http_req_init(ug__http_req *r, const ug__http_limits *limits, ug__http_header *headers);

/* Parse base[r->consumed .. len). base must stay the same bytes (it may move in memory) from
 * one call to the next, with new bytes only appended. Returns enum ug__http_result. Bytes
 * after the end of the request (a pipelined next request) are never consumed. */
int ug__http_parse(ug__http_req *r, char *base, uint32_t len);

/* Once UG_HTTP_HEADERS_DONE is returned, before the next call: the body's limit (413 at
 * once for a Content-Length over it, or as soon as a chunked body passes it) and whether it
 * is streamed. Without this call the next parse takes limits->max_body_bytes, buffered.
 * Returns UG_HTTP_HEADERS_DONE or UG_HTTP_ERROR.
 *
 * Streamed: the caller moves the bytes after the head (base[header_bytes ..)) to a buffer of
 * their own and parses from it; each parse leaves body.len new de-chunked bytes at its
 * offset 0 (body.off), which the caller hands out, then removes with ug__http_body_drop
 * (which also removes the framing consumed), before parsing more. Memory is what the caller
 * buffers, whatever the body's size; offsets restart after every drop. On UG_HTTP_DONE the
 * last bytes are at offset 0 and the bytes after 'consumed' are the next request's. */
int ug__http_body_begin(ug__http_req *r, uint64_t limit, int stream);
void ug__http_body_drop(ug__http_req *r, char *base, uint32_t *len);

/* Byte classes: RFC 9110 5.6.2 tchar, RFC 3986 reg-name's unreserved / sub-delims, HEXDIG. */
enum ug__http_byte_class {
    UG_HTTP_TCHAR = 1u << 0,
    UG_HTTP_REG_NAME = 1u << 1,
    UG_HTTP_HEX = 1u << 2,
};
unsigned ug__http_byte_class(unsigned char c);
int ug__http_is_tchar(unsigned char c);
/* Whether base[0 .. len) is the start of a HEAD request (for an error answered before the
 * head is complete: no body). */
int ug__http_starts_head(const char *base, uint32_t len);

/* Case-insensitive lookup of the first header named name; returns its index or -1. */
int ug__http_find_header(const ug__http_req *r, const char *base, const char *name,
                         uint32_t name_len);

/* The same for the trailer fields of a chunked body (an index into headers, or -1). */
int ug__http_find_trailer(const ug__http_req *r, const char *base, const char *name,
                          uint32_t name_len);

/* Reason phrase for a status code ("OK", "Not Found", ...); "Unknown" if not known. */
const char *ug__http_reason(int status);

#endif
