/*
 * HTTP/1.1 request parser glue over http-parser 2.9 (the only file that includes it).
 *
 * How the pieces fit:
 * - http-parser's callbacks receive pointers into the buffer handed to
 *   http_parser_execute(). During a call, parser->data points at a struct on our stack that
 *   holds the request and the buffer's base, so every pointer becomes an offset from base.
 *   A field split over two calls arrives as two callbacks whose bytes are adjacent (the caller
 *   only appends), so the span is extended.
 * - The parser is paused in on_headers_complete (UG_HTTP_HEADERS_DONE) and in
 *   on_message_complete (UG_HTTP_DONE), so a pipelined request's bytes are never consumed.
 *   http-parser returns from a pause in on_headers_complete *before* consuming the header
 *   section's final LF; we report that LF as consumed and feed it again on the next call
 *   (ST_REFEED), where the parser, now in s_headers_done, expects exactly that byte.
 * - Limits are ours, not http-parser's global one: while the header section is incomplete we
 *   never feed the parser past max_header_bytes, so a header section that has not ended
 *   within the limit is a 431 at once, however slowly it arrives. A chunked body's raw bytes
 *   (sizes, extensions, CRLFs, trailers included) are capped the same way.
 * - Chunked bodies are de-chunked in place: body bytes are moved down to body_write_, which
 *   is never past them. Only bytes already consumed are touched.
 * - Debian builds libhttp_parser with HTTP_PARSER_STRICT=0. That mode takes any byte where
 *   it expects the LF of a CRLF in several places (end of the header section, an empty
 *   header value, every piece of chunk framing), takes anything for the "HTTP/" literal,
 *   allows SP in header names (so "Transfer-Encoding : chunked" frames the body) and TAB /
 *   FF in the request-target. Those are request-smuggling material, so the strict checks are
 *   redone here, on the bytes the callbacks delimit (on_header_field, on_header_value,
 *   on_headers_complete, the chunk callbacks and chunk_tail_ok).
 */
#include "http.h"

#include <http_parser.h>
#include <stddef.h>
#include <string.h>

_Static_assert(sizeof(http_parser) <= sizeof(((ug__http_req *)0)->parser_storage),
               "ug__http_req.parser_storage is too small for http_parser");
_Static_assert(_Alignof(http_parser) <= 8, "ug__http_req.parser_storage is under-aligned");

/* state_ layout: the phase in the low bits, then flags. */
enum {
    PH_HEADERS = 0, /* request line and header section */
    PH_BODY = 1,    /* HEADERS_DONE returned; body (possibly empty) follows */
    PH_DONE = 2,
    PH_ERROR = 3,
    PH_MASK = 3,

    ST_REFEED = 1u << 2,       /* the header section's final LF must be fed again */
    ST_URL = 1u << 3,          /* target.off is set */
    ST_IN_FIELD = 1u << 4,     /* last header callback was a field name */
    ST_IN_VALUE = 1u << 5,     /* last header callback was a field value */
    ST_TE = 1u << 6,           /* a Transfer-Encoding header was seen */
    ST_TE_BAD = 1u << 7,       /* ... whose value is not exactly "chunked" */
    ST_TE_DUP = 1u << 8,       /* ... more than once */
    ST_EXPECT_100 = 1u << 9,   /* Expect: 100-continue */
    ST_CHUNK_START = 1u << 10, /* chunk size line seen, no data of that chunk yet */
    ST_CHUNK_DATA = 1u << 11,  /* a data chunk was seen: cur_hdr_ = offset of its end */
};

/* Framing overhead a chunked body may carry beyond its de-chunked size: the raw chunked body
 * (after the header section) may not exceed 2 * max_body_bytes + CHUNK_SLACK bytes. That is
 * plenty for chunks of 8 bytes or more, and bounds what a client can make us buffer. */
#define CHUNK_SLACK 65536u

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
    r->state_ = (r->state_ & ~(uint32_t)PH_MASK) | PH_ERROR;
    return UG_HTTP_ERROR;
}

static unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* a (length n) equals the lower-case literal lit (length n), ignoring ASCII case. */
static int ieq(const char *a, const char *lit, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != (unsigned char)lit[i]) return 0;
    return 1;
}

static int is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* ---- callbacks ---------------------------------------------------------------------- */

static int on_url(http_parser *hp, const char *at, size_t n) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    if (!(r->state_ & ST_URL)) {
        r->state_ |= ST_URL;
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

/* A header's value is complete: trim it and note the headers we act on. */
static void finish_header(struct ctx *c, ug__http_header *h) {
    ug__http_req *r = c->r;
    const char *b = c->base;
    while (h->value.len && (b[h->value.off] == ' ' || b[h->value.off] == '\t')) {
        h->value.off++;
        h->value.len--;
    }
    while (h->value.len && (b[h->value.off + h->value.len - 1] == ' ' ||
                            b[h->value.off + h->value.len - 1] == '\t'))
        h->value.len--;
    const char *name = b + h->name.off, *val = b + h->value.off;
    switch (h->name.len) {
    case 6:
        if (ieq(name, "expect", 6) && h->value.len == 12 && ieq(val, "100-continue", 12))
            r->state_ |= ST_EXPECT_100;
        break;
    case 17:
        if (ieq(name, "transfer-encoding", 17)) {
            if (r->state_ & ST_TE) r->state_ |= ST_TE_DUP;
            r->state_ |= ST_TE;
            if (!(h->value.len == 7 && ieq(val, "chunked", 7))) r->state_ |= ST_TE_BAD;
        }
        break;
    default:
        break;
    }
}

static int on_header_field(http_parser *hp, const char *at, size_t n) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    if ((r->state_ & PH_MASK) != PH_HEADERS) return 0; /* chunked trailer: ignored */
    uint32_t off = (uint32_t)(at - c->base);
    if (memchr(at, ' ', n)) { /* the only non-token byte non-strict mode lets through */
        fail(r, 400, "invalid character in header name");
        return -1;
    }
    if (r->state_ & ST_IN_FIELD) { /* continuation of the same name */
        r->headers[r->cur_hdr_].name.len += (uint32_t)n;
        return 0;
    }
    if (r->state_ & ST_IN_VALUE) finish_header(c, &r->headers[r->cur_hdr_]);
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
    r->state_ = (r->state_ & ~(uint32_t)ST_IN_VALUE) | ST_IN_FIELD;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t n) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    if ((r->state_ & PH_MASK) != PH_HEADERS) return 0; /* chunked trailer: ignored */
    uint32_t off = (uint32_t)(at - c->base);
    ug__http_header *h = &r->headers[r->cur_hdr_];
    if (r->state_ & ST_IN_FIELD) {
        /* An empty value is reported at the start of the next line: that line must really
         * start there (non-strict mode takes "Name:\rX" as an empty value). */
        if (n == 0 && at[-1] != '\n') {
            fail(r, 400, "CR without LF");
            return -1;
        }
        h->value.off = off;
        h->value.len = (uint32_t)n;
        r->state_ = (r->state_ & ~(uint32_t)ST_IN_FIELD) | ST_IN_VALUE;
        return 0;
    }
    if (off != h->value.off + h->value.len) {
        /* http-parser reports an obs-fold continuation line as more value bytes after a
         * gap (the CRLF). RFC 9112 5.2: reject or replace; we reject. */
        fail(r, 400, "obsolete line folding");
        return -1;
    }
    h->value.len += (uint32_t)n;
    return 0;
}

/* path = target up to '?' or '#' (for absolute-form, from the first '/' after the authority);
 * query = after the first '?' up to '#'. Returns -1 if the target holds a control byte
 * (non-strict http-parser lets TAB and FF through). */
static int split_target(ug__http_req *r, const char *base) {
    const char *t = base + r->target.off;
    uint32_t n = r->target.len, ps = 0, pe, q, i;
    for (i = 0; i < n; i++)
        if ((unsigned char)t[i] <= ' ' || t[i] == 0x7f) return -1;
    if (n && t[0] != '/' && t[0] != '*') { /* absolute-form: scheme "://" authority path */
        for (i = 0; i + 2 < n; i++)
            if (t[i] == ':' && t[i + 1] == '/' && t[i + 2] == '/') break;
        ps = (i + 2 < n) ? i + 3 : 0;
        while (ps < n && t[ps] != '/' && t[ps] != '?' && t[ps] != '#') ps++;
    }
    for (pe = ps; pe < n && t[pe] != '?' && t[pe] != '#'; pe++) {
    }
    r->path.off = r->target.off + ps;
    r->path.len = pe - ps;
    if (pe < n && t[pe] == '?') {
        for (q = pe + 1; q < n && t[q] != '#'; q++) {
        }
        r->has_query = 1;
        r->query.off = r->target.off + pe + 1;
        r->query.len = q - (pe + 1);
    }
    return 0;
}

static int on_headers_complete(http_parser *hp) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    const ug__http_limits *lim = r->limits;
    if (r->state_ & ST_IN_VALUE) finish_header(c, &r->headers[r->cur_hdr_]);
    r->state_ &= ~(uint32_t)(ST_IN_FIELD | ST_IN_VALUE);
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
    int target_ok = split_target(r, b) == 0;
    uint32_t st = r->state_;
    int chunked = (hp->flags & F_CHUNKED) != 0;
    uint64_t cl = (hp->flags & F_CONTENTLENGTH) ? hp->content_length : 0;
    uint32_t f = 0;
    if (http_should_keep_alive(hp)) f |= UG_HTTP_KEEP_ALIVE;
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
    if (e + 1 != r->target.off || b[tend] != ' ' || memcmp(b + tend + 1, "HTTP/", 5) != 0) {
        fail(r, 400, "malformed request line");
        return -1;
    }
    if (!target_ok) {
        fail(r, 400, "control character in request-target");
        return -1;
    }
    if (hp->method == HTTP_CONNECT) {
        fail(r, 501, "CONNECT not supported");
        return -1;
    }
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
    /* The whole request must fit the caller's uint32_t offsets. */
    if (cl > lim->max_body_bytes || cl > UINT32_MAX - (uint64_t)lim->max_header_bytes) {
        fail(r, 413, "Content-Length too large");
        return -1;
    }

    r->state_ = (r->state_ & ~(uint32_t)PH_MASK) | PH_BODY;
    c->result = UG_HTTP_HEADERS_DONE;
    http_parser_pause(hp, 1);
    return 0;
}

/* Chunked framing, checked where non-strict http-parser takes any byte: the CRLF that ends
 * a chunk size line (checked before the chunk's data), the CRLF after a chunk's data
 * (checked when the next size line is done), and the last chunk's line and the trailer
 * section (checked once the message is complete, in ug__http_parse). */
static int crlf_at(const char *b, uint32_t off) {
    return b[off] == '\r' && b[off + 1] == '\n';
}

static int on_chunk_header(http_parser *hp) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    if ((r->state_ & ST_CHUNK_DATA) && !crlf_at(c->base, r->cur_hdr_)) {
        fail(r, 400, "chunk data not followed by CRLF");
        return -1;
    }
    r->state_ |= ST_CHUNK_START;
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t n) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    uint32_t off = (uint32_t)(at - c->base);
    if (r->state_ & ST_CHUNK_START) { /* first data of a chunk: its size line ends in CRLF */
        if (!crlf_at(c->base, off - 2)) {
            fail(r, 400, "chunk size line not ended by CRLF");
            return -1;
        }
        r->state_ = (r->state_ & ~(uint32_t)ST_CHUNK_START) | ST_CHUNK_DATA;
    }
    r->cur_hdr_ = off + (uint32_t)n; /* raw end of the data so far (chunked) */
    if (off != r->body_write_) memmove(c->base + r->body_write_, at, n); /* de-chunk */
    r->body_write_ += (uint32_t)n;
    r->body.len += (uint32_t)n;
    if (r->body.len > r->limits->max_body_bytes) {
        fail(r, 413, "chunked body too large");
        return -1;
    }
    return 0;
}

static int on_message_complete(http_parser *hp) {
    struct ctx *c = hp->data;
    ug__http_req *r = c->r;
    r->state_ = (r->state_ & ~(uint32_t)PH_MASK) | PH_DONE;
    c->result = UG_HTTP_DONE;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/* ---- API ---------------------------------------------------------------------------- */

void ug__http_req_init(ug__http_req *r, const ug__http_limits *limits, ug__http_header *headers) {
    memset(r, 0, sizeof *r);
    http_parser_init(parser_of(r), HTTP_REQUEST);
    r->limits = limits;
    r->headers = headers;
}

/* Status for an error http-parser found by itself; at is the offending byte. */
static int parser_error(ug__http_req *r, enum http_errno e, const char *base, uint32_t at) {
    switch (e) {
    case HPE_INVALID_METHOD: {
        /* A token that is not a method we know is 501; anything else is not HTTP. */
        unsigned char ch = (unsigned char)base[at];
        uint32_t m = 0;
        while (m < at && (base[m] == '\r' || base[m] == '\n')) m++;
        if (is_tchar(ch) || (ch == ' ' && at > m)) return fail(r, 501, "unknown method");
        return fail(r, 400, "malformed request line");
    }
    case HPE_INVALID_VERSION:
        return fail(r, 400, "malformed HTTP version");
    case HPE_INVALID_URL:
        return fail(r, 400, "malformed request-target");
    case HPE_HEADER_OVERFLOW: /* only if max_header_bytes is set above http-parser's 80 KiB */
        if ((r->state_ & PH_MASK) == PH_HEADERS) return fail(r, 431, "header section too large");
        return fail(r, 413, "chunk framing too large");
    case HPE_INVALID_TRANSFER_ENCODING:
        return fail(r, 501, "unsupported Transfer-Encoding");
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        return fail(r, 400, "conflicting Content-Length");
    case HPE_INVALID_CONTENT_LENGTH:
        return fail(r, 400, "invalid Content-Length");
    case HPE_INVALID_CHUNK_SIZE:
        return fail(r, 400, "invalid chunk size");
    case HPE_INVALID_HEADER_TOKEN:
        return fail(r, 400, "invalid character in header");
    default:
        return fail(r, 400, "malformed request");
    }
}

/* The last chunk's size line and the trailer section, from the end of the last chunk's data
 * (or of the header section) to the end of the message: every CR must be followed by LF. */
static int chunk_tail_ok(const ug__http_req *r, const char *base) {
    uint32_t from = (r->state_ & ST_CHUNK_DATA) ? r->cur_hdr_ + 2 : r->header_bytes;
    const char *p = base + from, *end = base + r->consumed;
    while ((p = memchr(p, '\r', (size_t)(end - p))) != NULL) {
        if (p + 1 >= end || p[1] != '\n') return 0;
        p += 2;
    }
    return 1;
}

int ug__http_parse(ug__http_req *r, char *base, uint32_t len) {
    uint32_t phase = r->state_ & PH_MASK;
    if (phase == PH_DONE) return UG_HTTP_DONE;
    if (phase == PH_ERROR) return UG_HTTP_ERROR;

    http_parser *hp = parser_of(r);
    const ug__http_limits *lim = r->limits;
    uint32_t start = r->consumed - ((r->state_ & ST_REFEED) ? 1 : 0);
    uint32_t cap = UINT32_MAX; /* never feed the parser past this offset */
    if (phase == PH_HEADERS) {
        cap = lim->max_header_bytes;
    } else if (r->flags & UG_HTTP_CHUNKED) {
        uint64_t c = (uint64_t)r->header_bytes + 2 * lim->max_body_bytes + CHUNK_SLACK;
        if (c < UINT32_MAX) cap = (uint32_t)c;
    }
    uint32_t end = len < cap ? len : cap;
    if (end <= start) return UG_HTTP_NEED_MORE;

    struct ctx c = {r, base, UG_HTTP_NEED_MORE};
    hp->data = &c;
    if (HTTP_PARSER_ERRNO(hp) == HPE_PAUSED) http_parser_pause(hp, 0);
    size_t n = http_parser_execute(hp, &settings, base + start, end - start);
    hp->data = NULL;
    enum http_errno e = HTTP_PARSER_ERRNO(hp);
    uint32_t pos = start + (uint32_t)n;
    r->state_ &= ~(uint32_t)ST_REFEED;

    if (e == HPE_PAUSED) {
        if (c.result == UG_HTTP_HEADERS_DONE) {
            /* Paused on the header section's final LF, not yet consumed (see top). */
            if (pos >= end || base[pos] != '\n') {
                r->consumed = pos;
                return fail(r, 400, "malformed header section");
            }
            r->header_bytes = pos + 1;
            r->consumed = pos + 1;
            r->body.off = r->body_write_ = pos + 1;
            r->state_ |= ST_REFEED;
        } else {
            r->consumed = pos;
            if ((r->flags & UG_HTTP_CHUNKED) && !chunk_tail_ok(r, base))
                return fail(r, 400, "CR without LF in chunked framing");
        }
        return c.result;
    }
    r->consumed = pos;
    if (e != HPE_OK) {
        if ((r->state_ & PH_MASK) == PH_ERROR) return UG_HTTP_ERROR; /* a callback's verdict */
        return parser_error(r, e, base, pos < end ? pos : end - 1);
    }
    if (pos >= cap) { /* everything up to the limit consumed and still not complete */
        if (phase == PH_HEADERS) return fail(r, 431, "header section too large");
        return fail(r, 413, "chunked body too large");
    }
    return UG_HTTP_NEED_MORE;
}

int ug__http_find_header(const ug__http_req *r, const char *base, const char *name,
                         uint32_t name_len) {
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const ug__http_header *h = &r->headers[i];
        if (h->name.len != name_len) continue;
        const char *a = base + h->name.off;
        uint32_t k = 0;
        while (k < name_len && lower((unsigned char)a[k]) == lower((unsigned char)name[k])) k++;
        if (k == name_len) return (int)i;
    }
    return -1;
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
