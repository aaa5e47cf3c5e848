/*
 * HTTP/1.1 request parser glue. http-parser 2.9 reads the request line and the header
 * section (this is the only file that includes it); the body framing is ours.
 *
 * How the pieces fit:
 * - http-parser's callbacks receive pointers into the buffer handed to
 *   http_parser_execute(). During a call, parser->data points at a struct on our stack that
 *   holds the request and the buffer's base, so every pointer becomes an offset from base.
 *   A field split over two calls arrives as two callbacks whose bytes are adjacent (the caller
 *   only appends), so the span is extended.
 * - The parser is paused in on_headers_complete (UG_HTTP_HEADERS_DONE), which http-parser
 *   returns from *before* consuming the header section's final LF; that LF ends the head and
 *   http-parser is not used for this request again.
 * - The body is framed here: Content-Length by counting, chunked by a strict line parser of
 *   our own (RFC 9112 section 7.1: sizes, extensions, CRLFs and the trailer section). That
 *   keeps the framing in the one place smuggling lives, instead of in patches around a
 *   lenient state machine. Chunked bodies are de-chunked in place: body bytes are moved down
 *   to body_write_, which is never past them; only bytes already consumed are touched.
 * - Limits are ours, not http-parser's global one: while the header section is incomplete we
 *   never feed the parser past max_header_bytes, so a header section that has not ended
 *   within the limit is a 431 at once, however slowly it arrives. A chunked body's raw bytes
 *   (sizes, extensions, CRLFs, trailers included) are capped the same way.
 * - Debian builds libhttp_parser with HTTP_PARSER_STRICT=0. That mode takes any byte where
 *   it expects the LF of a CRLF in several places, takes anything for the "HTTP/" literal,
 *   allows SP in header names (so "Transfer-Encoding : chunked" frames the body) and TAB /
 *   FF in the request-target. Those are request-smuggling material, so the strict rules are
 *   applied here: every line of the head ends in CRLF and no line starts with SP or HTAB
 *   (one pass over the head once it is complete: bare CR, bare LF and obs-fold, in every
 *   position), header names are tokens, the request line is checked byte for byte.
 */
#include "http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>

_Static_assert(sizeof(http_parser) <= sizeof(((ug__http_req *)0)->parser_storage),
               "ug__http_req.parser_storage is too small for http_parser");
_Static_assert(_Alignof(http_parser) <= 8, "ug__http_req.parser_storage is under-aligned");

/* Where a request is (ug__http_req.phase_). */
enum {
    PH_HEADERS = 0, /* request line and header section, through http-parser */
    PH_LENGTH,      /* Content-Length body (possibly empty) */
    PH_CHUNK_LINE,  /* a chunk-size line */
    PH_CHUNK_DATA,  /* chunk data: chunk_left_ bytes to go */
    PH_CHUNK_CRLF,  /* the CRLF after a chunk's data */
    PH_TRAILERS,    /* the trailer section, up to its empty line */
    PH_DONE,
    PH_ERROR,
};

/* Facts gathered while the head is parsed (ug__http_req.flags_). */
enum {
    ST_URL = 1u << 0,        /* target.off is set */
    ST_IN_FIELD = 1u << 1,   /* last header callback was a field name */
    ST_IN_VALUE = 1u << 2,   /* last header callback was a field value */
    ST_TE = 1u << 3,         /* a Transfer-Encoding header was seen */
    ST_TE_BAD = 1u << 4,     /* ... whose value is not exactly "chunked" */
    ST_TE_DUP = 1u << 5,     /* ... more than once */
    ST_EXPECT_100 = 1u << 6, /* Expect: 100-continue */
    ST_HOST_DUP = 1u << 7,   /* more than one Host field line */
    ST_CONN_CLOSE = 1u << 8, /* a Connection field holds the "close" option */
    ST_CONN_KA = 1u << 9,    /* ... the "keep-alive" option */
};

/* Framing overhead a chunked body may carry beyond its de-chunked size: the raw chunked body
 * (after the header section) may not exceed 2 * max_body_bytes + CHUNK_SLACK bytes. That is
 * plenty for chunks of 8 bytes or more, and bounds what a client can make us buffer. */
#define CHUNK_SLACK 65536u
/* A chunk-size line (size and extensions) longer than this is refused: nobody needs more,
 * and it bounds the work of looking for the line's end as its bytes trickle in. */
#define CHUNK_LINE_MAX 4096u

/* A string literal and its length, for comparisons (never counted by hand). */
#define LIT(s) (s), ((uint32_t)sizeof(s) - 1)

/* Lives on ug__http_parse's stack while http_parser_execute runs. */
struct ctx {
    ug__http_req *r;
    char *base;
    int result; /* set by a callback that pauses the parser */
};

static http_parser *parser_of(ug__http_req *r) {
    return (http_parser *)(void *)r->parser_storage;
}

static int fail(ug__http_req *r, int status, const char *reason) {
    r->error_status = status;
    r->error_reason = reason;
    r->phase_ = PH_ERROR;
    return UG_HTTP_ERROR;
}

static unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* a (length n) equals the lower-case literal lit of length lit_len, ignoring ASCII case. */
static int ieq(const char *a, uint32_t n, const char *lit, uint32_t lit_len) {
    if (n != lit_len) return 0;
    for (uint32_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != (unsigned char)lit[i]) return 0;
    return 1;
}

/* The byte classes of http.h (UG_HTTP_TCHAR, _REG_NAME, _HEX), one bit each, generated from
 * their definitions; test_http checks every byte against them. */
static const unsigned char byte_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 3, 0, 1, 3, 1, 3, 3, 2, 2, 3, 3, 2, 3, 3, 0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 2, 0, 2, 0, 0,
    0, 7, 7, 7, 7, 7, 7, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0, 0, 0, 1, 3,
    1, 7, 7, 7, 7, 7, 7, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0, 1, 0, 3, 0,
    /* 0x80-0xff: none */
};

unsigned ug__http_byte_class(unsigned char c) {
    return byte_class[c];
}

int ug__http_is_tchar(unsigned char c) {
    return (byte_class[c] & UG_HTTP_TCHAR) != 0;
}

static int is_hex(unsigned char c) {
    return (byte_class[c] & UG_HTTP_HEX) != 0;
}

static int is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}

static int is_alpha(unsigned char c) {
    return lower(c) >= 'a' && lower(c) <= 'z';
}

/* ---- callbacks ---------------------------------------------------------------------- */

static int on_url(http_parser *hp, const char *at, size_t n) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    if (!(r->flags_ & ST_URL)) {
        r->flags_ |= ST_URL;
        r->target.off = (uint32_t)(at - c->base);
        r->target.len = 0;
    }
    r->target.len += (uint32_t)n;
    if (r->target.len > r->limits->max_uri_bytes) {
        fail(r, 414, "request-target too long");
        return -1;
    }
    return 0;
}

/* Connection = #connection-option (RFC 9110 7.6.1): note "close" and "keep-alive", case
 * insensitively, in a list that may hold empty elements (5.6.1) and OWS around them. */
static uint32_t connection_options(const char *v, uint32_t n) {
    uint32_t st = 0, i = 0;
    while (i < n) {
        uint32_t s = i, e;
        while (i < n && v[i] != ',') i++;
        e = i++;
        while (s < e && (v[s] == ' ' || v[s] == '\t')) s++;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (ieq(v + s, e - s, LIT("close"))) st |= ST_CONN_CLOSE;
        if (ieq(v + s, e - s, LIT("keep-alive"))) st |= ST_CONN_KA;
    }
    return st;
}

/* A field value without its leading and trailing spaces and tabs (OWS). */
static void trim_ows(const char *b, ug__span *v) {
    while (v->len && (b[v->off] == ' ' || b[v->off] == '\t')) {
        v->off++;
        v->len--;
    }
    while (v->len && (b[v->off + v->len - 1] == ' ' || b[v->off + v->len - 1] == '\t')) v->len--;
}

/* A header's value is complete: trim it and note the headers we act on. */
static void finish_header(struct ctx *c, ug__http_header *h) {
    ug__http_req *r = c->r;
    const char *b = c->base;
    trim_ows(b, &h->value);
    const char *name = b + h->name.off, *val = b + h->value.off;
    if (ieq(name, h->name.len, LIT("expect"))) {
        if (ieq(val, h->value.len, LIT("100-continue"))) r->flags_ |= ST_EXPECT_100;
    } else if (ieq(name, h->name.len, LIT("transfer-encoding"))) {
        if (r->flags_ & ST_TE) r->flags_ |= ST_TE_DUP;
        r->flags_ |= ST_TE;
        if (!ieq(val, h->value.len, LIT("chunked"))) r->flags_ |= ST_TE_BAD;
    } else if (ieq(name, h->name.len, LIT("connection"))) {
        r->flags_ |= connection_options(val, h->value.len);
    } else if (ieq(name, h->name.len, LIT("host"))) {
        if (r->host_idx_) r->flags_ |= ST_HOST_DUP;
        r->host_idx_ = (uint32_t)(h - r->headers) + 1;
    }
}

static int on_header_field(http_parser *hp, const char *at, size_t n) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    uint32_t off = (uint32_t)(at - c->base);
    if (memchr(at, ' ', n)) { /* the only non-token byte non-strict mode lets through */
        fail(r, 400, "invalid character in header name");
        return -1;
    }
    if (r->flags_ & ST_IN_FIELD) { /* continuation of the same name */
        r->headers[r->cur_hdr_].name.len += (uint32_t)n;
        return 0;
    }
    if (r->flags_ & ST_IN_VALUE) finish_header(c, &r->headers[r->cur_hdr_]);
    if (r->nheaders >= r->limits->max_headers) {
        fail(r, 431, UG_HTTP_REASON_TOO_MANY_HEADERS);
        return -1;
    }
    r->cur_hdr_ = r->nheaders++;
    ug__http_header *h = &r->headers[r->cur_hdr_];
    h->name.off = off;
    h->name.len = (uint32_t)n;
    h->value.off = off + (uint32_t)n;
    h->value.len = 0;
    r->flags_ = (r->flags_ & ~(uint32_t)ST_IN_VALUE) | ST_IN_FIELD;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t n) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    uint32_t off = (uint32_t)(at - c->base);
    ug__http_header *h = &r->headers[r->cur_hdr_];
    if (r->flags_ & ST_IN_FIELD) {
        /* field-value: no CTL but HTAB (RFC 9110 5.5). http-parser checks every byte of a
         * value but its first one (the byte after the colon and any whitespace); the first
         * callback of a value starts with it. */
        unsigned char ch = n ? (unsigned char)at[0] : ' ';
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            fail(r, 400, "invalid character in header value");
            return -1;
        }
        h->value.off = off;
        h->value.len = (uint32_t)n;
        r->flags_ = (r->flags_ & ~(uint32_t)ST_IN_FIELD) | ST_IN_VALUE;
        return 0;
    }
    if (off != h->value.off + h->value.len) {
        /* http-parser reports an obs-fold continuation line as more value bytes after a
         * gap (the CRLF). RFC 9112 5.2: reject or replace; we reject (head_lines_ok would
         * too, once the head is complete). */
        fail(r, 400, "obsolete line folding");
        return -1;
    }
    h->value.len += (uint32_t)n;
    return 0;
}

/* RFC 3986 host [ ":" port ], the grammar of Host and of an absolute-form authority:
 *   host = IP-literal / IPv4address / reg-name   (IPv4address is a reg-name lexically)
 *   IP-literal = "[" ( IPv6address / IPvFuture ) "]", checked for its alphabet only
 *   reg-name = *( unreserved / pct-encoded / sub-delims ); port = *DIGIT
 * No userinfo: RFC 9110 4.2.4 forbids it in http(s) URIs. May be empty. */
static int ip_literal_ok(const char *p, uint32_t n) {
    if (n && (p[0] == 'v' || p[0] == 'V')) { /* IPvFuture = "v" 1*HEXDIG "." 1*( unreserved /
                                                 sub-delims / ":" ) */
        uint32_t i = 1;
        while (i < n && is_hex((unsigned char)p[i])) i++;
        if (i == 1 || i == n || p[i] != '.' || i + 1 == n) return 0;
        for (i++; i < n; i++) {
            unsigned char ch = (unsigned char)p[i];
            if (!is_alpha(ch) && !is_digit(ch) && !strchr("-._~!$&'()*+,;=:", ch)) return 0;
        }
        return 1;
    }
    char tmp[INET6_ADDRSTRLEN];
    struct in6_addr a;
    if (n >= sizeof tmp) return 0;
    memcpy(tmp, p, n);
    tmp[n] = 0;
    return inet_pton(AF_INET6, tmp, &a) == 1;
}

static int authority_ok(const char *p, uint32_t n) {
    uint32_t i = 0;
    if (n && p[0] == '[') {
        for (i = 1; i < n && p[i] != ']'; i++) {
        }
        if (i == n || !ip_literal_ok(p + 1, i - 1)) return 0;
        i++;
    } else {
        for (; i < n && p[i] != ':'; i++) {
            unsigned char ch = (unsigned char)p[i];
            if (ch == '%') {
                if (i + 2 >= n || !is_hex((unsigned char)p[i + 1]) ||
                    !is_hex((unsigned char)p[i + 2]))
                    return 0;
                i += 2;
            } else if (!(byte_class[ch] & UG_HTTP_REG_NAME)) { /* unreserved / sub-delims */
                return 0;
            }
        }
    }
    if (i < n) {
        if (p[i] != ':') return 0;
        for (i++; i < n; i++)
            if (!is_digit((unsigned char)p[i])) return 0;
    }
    return 1;
}

/* Split the target into path and query and, for the absolute-form, the authority. RFC 9112
 * 3.2: origin-form = absolute-path [ "?" query ]; absolute-form = "http(s)://" authority
 * path-abempty [ "?" query ]; asterisk-form = "*" (OPTIONS only); no fragment in any form.
 * Returns 0, or -1 if the target holds a control byte (non-strict http-parser lets TAB and FF
 * through), a fragment, or is not one of those forms. */
static int split_target(ug__http_req *r, const char *base, int options) {
    const char *t = base + r->target.off;
    uint32_t n = r->target.len, ps = 0, pe, q, i;
    for (i = 0; i < n; i++)
        if ((unsigned char)t[i] <= ' ' || t[i] == 0x7f || t[i] == '#') return -1;
    if (n && t[0] == '*') {
        if (n != 1 || !options) return -1;
    } else if (n && t[0] != '/') {
        /* An origin server answers for http and https only (RFC 9110 4.2). */
        if (n > sizeof("https://") - 1 && ieq(t, sizeof("https://") - 1, LIT("https://")))
            ps = sizeof("https://") - 1;
        else if (n > sizeof("http://") - 1 && ieq(t, sizeof("http://") - 1, LIT("http://")))
            ps = sizeof("http://") - 1;
        else
            return -1;
        uint32_t as = ps;
        while (ps < n && t[ps] != '/' && t[ps] != '?') ps++;
        /* RFC 9110 4.2.1: an http(s) URI with an empty host is invalid. */
        if (ps == as || t[as] == ':' || !authority_ok(t + as, ps - as)) return -1;
        r->authority.off = r->target.off + as;
        r->authority.len = ps - as;
        r->has_authority = 1;
    }
    for (pe = ps; pe < n && t[pe] != '?'; pe++) {
    }
    r->path.off = r->target.off + ps;
    r->path.len = pe - ps;
    if (pe < n) {
        for (q = pe + 1; q < n; q++) {
        }
        r->has_query = 1;
        r->query.off = r->target.off + pe + 1;
        r->query.len = q - (pe + 1);
    }
    return 0;
}

/* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host; no request has two; the value is
 * a valid authority. The effective authority is the absolute-form's, else Host's. */
static int check_host(ug__http_req *r, const char *b) {
    if (r->flags_ & ST_HOST_DUP) return fail(r, 400, "more than one Host");
    if (!r->host_idx_) {
        if (r->http_minor >= 1) return fail(r, 400, "no Host");
        return 0;
    }
    const ug__http_header *h = &r->headers[r->host_idx_ - 1];
    if (!authority_ok(b + h->value.off, h->value.len)) return fail(r, 400, "invalid Host");
    if (!r->has_authority) {
        r->authority = h->value;
        r->has_authority = 1;
    }
    return 0;
}

static int on_headers_complete(http_parser *hp) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    if (r->flags_ & ST_IN_VALUE) finish_header(c, &r->headers[r->cur_hdr_]);
    r->flags_ &= ~(uint32_t)(ST_IN_FIELD | ST_IN_VALUE);
    r->http_major = (uint8_t)hp->http_major;
    r->http_minor = (uint8_t)hp->http_minor;

    /* The views and flags first: an error response below still wants to know about HEAD. */
    const char *b = c->base;
    uint32_t m = 0, e;
    /* The method is the first token of the request line (http-parser skips leading empty
     * lines and has validated it). */
    while (m < r->target.off && (b[m] == '\r' || b[m] == '\n')) m++;
    for (e = m; e < r->target.off && b[e] != ' '; e++) {
    }
    r->method.off = m;
    r->method.len = e - m;
    int target_ok = split_target(r, b, hp->method == HTTP_OPTIONS) == 0;
    uint32_t st = r->flags_;
    int chunked = (hp->flags & F_CHUNKED) != 0;
    uint64_t cl = (hp->flags & F_CONTENTLENGTH) ? hp->content_length : 0;
    uint32_t f = 0;
    /* Persistence, RFC 9112 9.3: "close" ends the connection whatever the version; else 1.1
     * persists, and 1.0 persists with "keep-alive". (Not http_should_keep_alive: http-parser
     * loses the options in a list with an empty element, "a,, close", and lets keep-alive
     * win over close in 1.0.) */
    if (!(st & ST_CONN_CLOSE) && (hp->http_minor >= 1 || (st & ST_CONN_KA)))
        f |= UG_HTTP_KEEP_ALIVE;
    if (chunked) f |= UG_HTTP_CHUNKED | UG_HTTP_HAS_BODY;
    if (cl) f |= UG_HTTP_HAS_BODY;
    if ((st & ST_EXPECT_100) && hp->http_minor >= 1) f |= UG_HTTP_EXPECT_CONTINUE;
    if (hp->method == HTTP_HEAD) f |= UG_HTTP_HEAD;
    r->flags = f;
    r->content_length = cl;

    if (hp->http_major != 1) {
        fail(r, 505, "HTTP version not supported");
        return -1;
    }
    /* "METHOD SP target SP HTTP/": non-strict mode skips the literal and extra spaces. (With
     * major 1 the parser went through " ????/1.1" after the target: no over-read.) */
    uint32_t tend = r->target.off + r->target.len;
    if (e + 1 != r->target.off || b[tend] != ' ' ||
        memcmp(b + tend + 1, "HTTP/", sizeof("HTTP/") - 1) != 0) {
        fail(r, 400, "malformed request line");
        return -1;
    }
    if (hp->method == HTTP_CONNECT) { /* before the target: its authority-form is not ours */
        fail(r, 501, "CONNECT not supported");
        return -1;
    }
    if (!target_ok) {
        fail(r, 400, "malformed request-target");
        return -1;
    }
    if (check_host(r, b) == UG_HTTP_ERROR) return -1;
    if (st & ST_TE) {
        if (st & ST_TE_DUP) {
            fail(r, 400, "repeated Transfer-Encoding");
            return -1;
        }
        if (st & ST_TE_BAD) {
            fail(r, 501, "unsupported Transfer-Encoding");
            return -1;
        }
        if (hp->http_minor == 0) { /* RFC 9112 6.1: the framing is faulty */
            fail(r, 400, "Transfer-Encoding in HTTP/1.0");
            return -1;
        }
    }
    if (chunked != ((st & ST_TE) != 0)) { /* our view and http-parser's must agree */
        fail(r, 400, "inconsistent Transfer-Encoding");
        return -1;
    }
    /* The declared length is checked against the limit when the body begins
     * (ug__http_body_begin): the caller may pick the limit by route, from the head. */
    c->result = UG_HTTP_HEADERS_DONE;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete, /* pauses: http-parser never sees a body */
};

/* ---- API ---------------------------------------------------------------------------- */

void ug__http_req_init(ug__http_req *r, const ug__http_limits *limits, ug__http_header *headers) {
    memset(r, 0, sizeof *r);
    http_parser_init(parser_of(r), HTTP_REQUEST);
    r->limits = limits;
    r->headers = headers;
    r->body_limit = limits->max_body_bytes;
}

int ug__http_body_begin(ug__http_req *r, uint64_t limit, int stream) {
    assert(r->phase_ != PH_HEADERS && !r->body_begun_);
    r->body_begun_ = 1;
    if (r->phase_ == PH_ERROR) return UG_HTTP_ERROR;
    r->body_limit = limit;
    if (r->content_length > limit) return fail(r, 413, "Content-Length too large");
    if (!stream) {
        /* A buffered request must fit the caller's uint32_t offsets. */
        if (r->content_length > UINT32_MAX - (uint64_t)r->header_bytes)
            return fail(r, 413, "Content-Length too large");
        return UG_HTTP_HEADERS_DONE;
    }
    /* From here the body is parsed from a buffer of its own that starts at the byte after
     * the head: every offset restarts at 0. */
    r->stream_ = 1;
    r->consumed = r->body.off = r->body_write_ = r->scan_ = 0;
    r->body_left_ = r->content_length;
    return UG_HTTP_HEADERS_DONE;
}

void ug__http_body_drop(ug__http_req *r, char *base, uint32_t *len) {
    assert(r->stream_ && r->body.off == 0);
    /* In the trailer section the lines parsed so far are kept (ug__http_find_trailer reads
     * them); before it, every byte consumed goes: the data and its framing. */
    uint32_t keep_from = r->phase_ == PH_TRAILERS ? r->trailer_start_ : r->consumed;
    assert(keep_from <= *len && r->body_write_ <= keep_from);
    r->body_write_ = 0;
    r->body.len = 0;
    if (!keep_from) return; /* nothing consumed (base may be NULL: an empty buffer) */
    memmove(base, base + keep_from, *len - keep_from);
    *len -= keep_from;
    r->body_dropped_ += keep_from;
    r->consumed -= keep_from;
    r->scan_ = r->scan_ > keep_from ? r->scan_ - keep_from : 0;
    r->trailer_start_ -= r->phase_ == PH_TRAILERS ? keep_from : 0;
    for (uint32_t i = 0; i < r->ntrailers; i++) {
        r->headers[r->nheaders + i].name.off -= keep_from;
        r->headers[r->nheaders + i].value.off -= keep_from;
    }
}

/* Status for an error http-parser found by itself; at is the offending byte. */
static int parser_error(ug__http_req *r, enum http_errno e, const char *base, uint32_t at) {
    switch (e) {
    case HPE_INVALID_METHOD: {
        /* A token that is not a method we know is 501; anything else is not HTTP. */
        unsigned char ch = (unsigned char)base[at];
        uint32_t m = 0;
        while (m < at && (base[m] == '\r' || base[m] == '\n')) m++;
        if (ug__http_is_tchar(ch) || (ch == ' ' && at > m)) return fail(r, 501, "unknown method");
        return fail(r, 400, "malformed request line");
    }
    case HPE_INVALID_VERSION:
        return fail(r, 400, "malformed HTTP version");
    case HPE_INVALID_URL:
        return fail(r, 400, "malformed request-target");
    case HPE_HEADER_OVERFLOW: /* only if max_header_bytes is set above http-parser's 80 KiB */
        return fail(r, 431, "header section too large");
    case HPE_INVALID_TRANSFER_ENCODING:
        return fail(r, 501, "unsupported Transfer-Encoding");
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        return fail(r, 400, "conflicting Content-Length");
    case HPE_INVALID_CONTENT_LENGTH:
        return fail(r, 400, "invalid Content-Length");
    case HPE_INVALID_HEADER_TOKEN:
        return fail(r, 400, "invalid character in header");
    default:
        return fail(r, 400, "malformed request");
    }
}

/* The head so far, b[0 .. n): every line ends in CRLF (no bare CR, no bare LF) and no line
 * after the first starts with SP or HTAB (obs-fold, RFC 9112 5.2; whitespace before the first
 * field line, 2.2). A complete head ends in LF, so a CR at the very end is only possible in
 * a head cut short by another error, where it is not yet wrong. */
static const char *head_lines_bad(const char *b, uint32_t n) {
    /* Eight bytes at a time past words with no byte below 0x0e (no CR, LF or HTAB: a
     * borrow sets the high bit of a byte below it), byte by byte where one is: heads are
     * short, this runs for every request. */
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint32_t i = 0;
    while (i < n) {
        uint64_t w;
        if (i + sizeof w <= n) {
            memcpy(&w, b + i, sizeof w);
            if (!((w - ones * 0x0e) & ~w & highs)) {
                i += sizeof w;
                continue;
            }
        }
        for (uint32_t e = i + sizeof w < n ? i + (uint32_t)sizeof w : n; i < e; i++) {
            if ((unsigned char)b[i] > '\r') continue;
            if (b[i] == '\n') {
                if (i == 0 || b[i - 1] != '\r') return "bare LF in the head";
                if (i + 1 < n && (b[i + 1] == ' ' || b[i + 1] == '\t'))
                    return "obsolete line folding";
            } else if (b[i] == '\r' && i + 1 < n && b[i + 1] != '\n') {
                return "bare CR in the head";
            }
        }
    }
    return NULL;
}

static int parse_head(ug__http_req *r, char *base, uint32_t len) {
    http_parser *hp = parser_of(r);
    uint32_t start = r->consumed, cap = r->limits->max_header_bytes;
    uint32_t end = len < cap ? len : cap;
    if (end <= start) return UG_HTTP_NEED_MORE;

    struct ctx c = {r, base, UG_HTTP_NEED_MORE};
    hp->data = &c;
    size_t n = http_parser_execute(hp, &settings, base + start, end - start);
    hp->data = NULL;
    enum http_errno e = HTTP_PARSER_ERRNO(hp);
    uint32_t pos = start + (uint32_t)n;
    r->consumed = pos;

    if (e == HPE_PAUSED) {
        /* Paused on the header section's final LF, not yet consumed (see top). */
        if (pos >= end || base[pos] != '\n') return fail(r, 400, "malformed header section");
        r->header_bytes = r->consumed = pos + 1;
        const char *bad = head_lines_bad(base, r->header_bytes);
        if (bad) return fail(r, 400, bad);
        r->body.off = r->body_write_ = r->header_bytes;
        r->phase_ = (r->flags & UG_HTTP_CHUNKED) ? PH_CHUNK_LINE : PH_LENGTH;
        return UG_HTTP_HEADERS_DONE;
    }
    if (e != HPE_OK) {
        /* Whatever else is wrong, broken line framing is what the client is told: 400 (the
         * same request then gets the same status however its bytes arrive). */
        const char *bad = head_lines_bad(base, pos < end ? pos + 1 : end);
        if (bad) return fail(r, 400, bad);
        if (r->phase_ == PH_ERROR) return UG_HTTP_ERROR; /* a callback's verdict */
        return parser_error(r, e, base, pos < end ? pos : end - 1);
    }
    if (pos >= cap) return fail(r, 431, "header section too large");
    return UG_HTTP_NEED_MORE;
}

/* BWS = *( SP / HTAB ) */
static const char *skip_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    return p;
}

static const char *skip_token(const char *p, const char *e) {
    while (p < e && ug__http_is_tchar((unsigned char)*p)) p++;
    return p;
}

/* quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 5.6.4). p is at the
 * opening quote; returns the byte after the closing one, or NULL. */
static const char *skip_quoted(const char *p, const char *e) {
    for (p++; p < e; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"') return p + 1;
        if (ch == '\\') {
            if (++p == e) return NULL;
            ch = (unsigned char)*p;
            if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) return NULL;
        } else if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) {
            return NULL;
        }
    }
    return NULL;
}

/* chunk = chunk-size [ chunk-ext ] CRLF (RFC 9112 7.1, 7.1.1); p .. e is the line without
 * its CRLF. chunk-size = 1*HEXDIG; chunk-ext = *( BWS ";" BWS chunk-ext-name
 * [ BWS "=" BWS chunk-ext-val ] ), chunk-ext-name = token, chunk-ext-val = token /
 * quoted-string. 0 with *size, or -1 if malformed (a size that overflows included). */
static int parse_chunk_line(const char *p, const char *e, uint64_t *size) {
    uint64_t v = 0;
    const char *d = p;
    for (; p < e && is_hex((unsigned char)*p); p++) {
        if (v > (UINT64_MAX >> 4)) return -1;
        unsigned char ch = lower((unsigned char)*p);
        v = v * 16 + (uint64_t)(is_digit(ch) ? ch - '0' : ch - 'a' + 10);
    }
    if (p == d) return -1;
    while (p < e) {
        p = skip_ws(p, e);
        if (p == e || *p != ';') return -1;
        p = skip_ws(p + 1, e);
        const char *name = p;
        p = skip_token(p, e);
        if (p == name) return -1;
        const char *after = skip_ws(p, e);
        if (after < e && *after == '=') {
            p = skip_ws(after + 1, e);
            if (p < e && *p == '"') {
                p = skip_quoted(p, e);
                if (!p) return -1;
            } else {
                const char *val = p;
                p = skip_token(p, e);
                if (p == val) return -1;
            }
        }
    }
    *size = v;
    return 0;
}

/* field-line = field-name ":" OWS field-value OWS; field-name = token; field-value holds no
 * CTL but HTAB (RFC 9110 5.5). p .. e is the line without its CRLF; it does not start with
 * SP or HTAB (an obs-fold line fails here: its name would be empty). */
static int trailer_line_ok(const char *p, const char *e) {
    const char *name = p;
    p = skip_token(p, e);
    if (p == name || p == e || *p != ':') return 0;
    for (p++; p < e; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) return 0;
    }
    return 1;
}

/* The next complete line from r->consumed: its end (the LF's offset), or 0 if no LF has
 * arrived yet. The search resumes where the last one stopped (scan_), so a line that
 * trickles in byte by byte is scanned once. A line must end in CRLF. */
static int next_line(ug__http_req *r, const char *base, uint32_t end, uint32_t max, uint32_t *lf) {
    uint32_t from = r->scan_ > r->consumed ? r->scan_ : r->consumed;
    const char *hit = from < end ? memchr(base + from, '\n', end - from) : NULL;
    if (!hit) {
        /* Not complete yet, but a CR already followed by something else is final. */
        uint32_t cr_from = from > r->consumed ? from - 1 : from;
        const char *cr = cr_from < end ? memchr(base + cr_from, '\r', end - cr_from) : NULL;
        if (cr && cr + 1 < base + end) return -1;
        r->scan_ = end;
        if (end - r->consumed > max) return -1;
        return 0;
    }
    *lf = (uint32_t)(hit - base);
    r->scan_ = 0;
    if (*lf - r->consumed > max || *lf == r->consumed || base[*lf - 1] != '\r') return -1;
    /* A CR inside the line is as bad as a bare LF. */
    if (memchr(base + r->consumed, '\r', *lf - 1 - r->consumed)) return -1;
    return 1;
}

/* A trailer field line (trailer_line_ok has checked it): kept for ug__http_find_trailer in
 * the header array's entries the headers left free; those past them are not kept (trailers
 * are optional to act on: RFC 9110 6.5.1). The section as a whole is held to
 * max_header_bytes, like the head: a streamed body keeps it in its buffer until the end. */
static int add_trailer(ug__http_req *r, const char *base, uint32_t lf) {
    if (lf + 1 - r->trailer_start_ > r->limits->max_header_bytes)
        return fail(r, 431, "trailer section too large");
    if (r->nheaders + r->ntrailers >= r->limits->max_headers) return 0;
    ug__http_header *h = &r->headers[r->nheaders + r->ntrailers++];
    const char *line = base + r->consumed;
    const char *colon = memchr(line, ':', lf - 1 - r->consumed);
    assert(colon);
    h->name = (ug__span){r->consumed, (uint32_t)(colon - line)};
    uint32_t v = (uint32_t)(colon + 1 - base);
    h->value = (ug__span){v, lf - 1 - v};
    trim_ows(base, &h->value);
    return 0;
}

/* A streamed Content-Length body: whatever has arrived, up to what is left of it. */
static int parse_length_stream(ug__http_req *r, uint32_t len) {
    uint32_t avail = len - r->consumed;
    uint32_t take = (uint64_t)avail < r->body_left_ ? avail : (uint32_t)r->body_left_;
    r->consumed += take;
    r->body_write_ = r->consumed;
    r->body.len = r->consumed;
    r->body_left_ -= take;
    r->body_seen_ += take;
    if (r->body_left_) return UG_HTTP_NEED_MORE;
    r->phase_ = PH_DONE;
    return UG_HTTP_DONE;
}

static int parse_body(ug__http_req *r, char *base, uint32_t len) {
    const ug__http_limits *lim = r->limits;
    if (!r->body_begun_) { /* the caller took the defaults */
        int rc = ug__http_body_begin(r, r->body_limit, 0);
        if (rc == UG_HTTP_ERROR) return rc;
    }
    if (r->phase_ == PH_LENGTH && r->stream_) return parse_length_stream(r, len);
    if (r->phase_ == PH_LENGTH) {
        uint64_t need = (uint64_t)r->header_bytes + r->content_length;
        if (len < need) {
            r->consumed = len;
            return UG_HTTP_NEED_MORE;
        }
        r->consumed = (uint32_t)need;
        r->body.len = (uint32_t)r->content_length;
        r->phase_ = PH_DONE;
        return UG_HTTP_DONE;
    }
    /* Chunked: the raw bytes, framing included, are capped (saturating: limits are 64-bit,
     * offsets 32-bit). A streamed body is not: its buffer only ever holds what has not been
     * handed out, and the caller bounds that. */
    uint64_t slack = r->stream_ || r->body_limit > (UINT64_MAX - CHUNK_SLACK) / 2
                         ? UINT64_MAX
                         : 2 * r->body_limit + CHUNK_SLACK;
    uint32_t cap =
        slack < UINT32_MAX - r->header_bytes ? (uint32_t)(r->header_bytes + slack) : UINT32_MAX;
    uint32_t end = len < cap ? len : cap;
    for (;;) {
        uint32_t lf = 0;
        int got;
        switch (r->phase_) {
        case PH_CHUNK_LINE: {
            got = next_line(r, base, end, CHUNK_LINE_MAX, &lf);
            if (got < 0) return fail(r, 400, "malformed chunk-size line");
            if (!got) goto need_more;
            uint64_t size;
            int rc = parse_chunk_line(base + r->consumed, base + lf - 1, &size);
            if (rc < 0) return fail(r, 400, "malformed chunk-size line");
            if (size > r->body_limit - r->body_seen_ ||
                (!r->stream_ && size > UINT32_MAX - r->consumed))
                return fail(r, 413, "chunked body too large");
            r->consumed = lf + 1;
            r->chunk_left_ = size;
            r->phase_ = size ? PH_CHUNK_DATA : PH_TRAILERS;
            r->trailer_start_ = r->consumed;
            break;
        }
        case PH_CHUNK_DATA: {
            uint32_t n = end - r->consumed;
            if (n > r->chunk_left_) n = (uint32_t)r->chunk_left_;
            if (!n) goto need_more;
            memmove(base + r->body_write_, base + r->consumed, n); /* de-chunk */
            r->body_write_ += n;
            r->body.len += n;
            r->body_seen_ += n;
            r->consumed += n;
            r->chunk_left_ -= n;
            if (!r->chunk_left_) r->phase_ = PH_CHUNK_CRLF;
            break;
        }
        case PH_CHUNK_CRLF:
            if (end - r->consumed < 2) {
                if (end > r->consumed && base[r->consumed] != '\r')
                    return fail(r, 400, "chunk data not followed by CRLF");
                goto need_more;
            }
            if (base[r->consumed] != '\r' || base[r->consumed + 1] != '\n')
                return fail(r, 400, "chunk data not followed by CRLF");
            r->consumed += 2;
            r->phase_ = PH_CHUNK_LINE;
            break;
        case PH_TRAILERS:
            got = next_line(r, base, end, lim->max_header_bytes, &lf);
            if (got < 0) return fail(r, 400, "malformed trailer section");
            if (!got) goto need_more;
            if (lf == r->consumed + 1) { /* the empty line: the message ends */
                r->consumed = lf + 1;
                r->phase_ = PH_DONE;
                return UG_HTTP_DONE;
            }
            if (!trailer_line_ok(base + r->consumed, base + lf - 1))
                return fail(r, 400, "malformed trailer section");
            if (add_trailer(r, base, lf)) return UG_HTTP_ERROR;
            r->consumed = lf + 1;
            break;
        default:
            return fail(r, 400, "malformed request");
        }
    }
need_more:
    if (len >= cap) return fail(r, 413, "chunked body too large"); /* more can't help */
    return UG_HTTP_NEED_MORE;
}

int ug__http_parse(ug__http_req *r, char *base, uint32_t len) {
    switch (r->phase_) {
    case PH_DONE:
        return UG_HTTP_DONE;
    case PH_ERROR:
        return UG_HTTP_ERROR;
    case PH_HEADERS:
        return parse_head(r, base, len);
    default:
        return parse_body(r, base, len);
    }
}

int ug__http_starts_head(const char *base, uint32_t len) {
    uint32_t m = 0; /* http-parser skips empty lines before the request line */
    while (m < len && (base[m] == '\r' || base[m] == '\n')) m++;
    return len - m >= sizeof("HEAD ") - 1 && !memcmp(base + m, "HEAD ", sizeof("HEAD ") - 1);
}

static int find_in(const ug__http_header *v, uint32_t n, const char *base, const char *name,
                   uint32_t name_len) {
    for (uint32_t i = 0; i < n; i++) {
        const ug__http_header *h = &v[i];
        if (h->name.len != name_len) continue;
        const char *a = base + h->name.off;
        uint32_t k = 0;
        while (k < name_len && lower((unsigned char)a[k]) == lower((unsigned char)name[k])) k++;
        if (k == name_len) return (int)i;
    }
    return -1;
}

int ug__http_find_header(const ug__http_req *r, const char *base, const char *name,
                         uint32_t name_len) {
    return find_in(r->headers, r->nheaders, base, name, name_len);
}

int ug__http_find_trailer(const ug__http_req *r, const char *base, const char *name,
                          uint32_t name_len) {
    int i = find_in(r->headers + r->nheaders, r->ntrailers, base, name, name_len);
    return i < 0 ? i : (int)r->nheaders + i;
}

const char *ug__http_reason(int status) {
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 305:
        return "Use Proxy";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 418:
        return "I'm a teapot";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 423:
        return "Locked";
    case 424:
        return "Failed Dependency";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}
