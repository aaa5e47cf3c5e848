/* Differential libFuzzer target: ugate's parser glue (src/http.c) against llhttp in strict
 * mode (LLHTTP_STRICT_MODE=1, HTTP_REQUEST, every lenient flag off). Both read a pipeline of
 * requests from the input until one errors or the input ends, and their framing is compared:
 *
 *   - ugate completes a request that llhttp rejects (at that request or earlier): abort;
 *   - both complete requests but frame them differently (number of complete requests, and
 *     for each one method, target, version, header names and values, body bytes, keep-alive,
 *     where the request ends): abort;
 *   - ugate rejects what llhttp accepts: allowed (ugate is deliberately stricter), counted
 *     and printed with UG_DIFF_VERBOSE=1 (a table by reason at exit).
 *
 * Requests after a limit error (413/414/431) on ugate's side, from an upgrade on llhttp's
 * side on, and past MAXREQ are not compared. The deliberate differences are in
 * deliberate_difference() below and in docs/parser-differences.md: one that is local to a
 * few bytes is patched out of llhttp's copy of the input (same length), and llhttp runs
 * again, so the rest of the input is still compared.
 *
 * Exploring: UG_DIFF_NOABORT=DIR prints the first input of each kind of disagreement, saves
 * up to 3 inputs per kind in DIR (diff-KIND-N) and goes on instead of aborting.
 * Minimising one kind: UG_DIFF_ONLY=TEXT aborts only for a disagreement whose message or
 * llhttp error reason contains TEXT (others pass), so -minimize_crash=1 keeps to that kind.
 *
 * Build (clang): cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DUGATE_FUZZ=ON
 *                cmake --build build-fuzz --target fuzz_llhttp
 * Run:  build-fuzz/fuzz/fuzz_llhttp -dict=fuzz/http.dict -jobs=1 -workers=1 CORPUS fuzz/corpus/llhttp
 * Replay one input with the verdict explained: UG_DIFF_VERBOSE=1 build-fuzz/fuzz/fuzz_llhttp FILE
 */
#include "http.h"

#include <ctype.h>
#include <llhttp.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAXREQ 64 /* requests compared per input */
#define MAXH 65   /* header slots: ugate's max_headers + 1 (more is a 431 for ugate) */

static const ug__http_limits LIMITS = {
    .max_header_bytes = 8192, .max_headers = 64, .max_uri_bytes = 4096, .max_body_bytes = 1u << 20};

typedef struct str {
    const char *p;
    uint32_t n;
} str;

typedef struct hdr {
    str name, value;
} hdr;

typedef struct req {
    str method, target, body;
    int major, minor;
    uint32_t nh; /* may exceed MAXH (only MAXH stored) */
    hdr h[MAXH];
    int keep_alive;
    int upgrade; /* llhttp: the request is an upgrade (or CONNECT) */
    uint32_t start, end; /* offsets in the input: first byte after the previous request, end */
    uint32_t head_end;   /* ugate: offset after the header section */
    int chunked;         /* ugate: UG_HTTP_CHUNKED */
} req;

/* How one parser's run over the whole input ended. */
enum { END_INCOMPLETE, END_ERROR, END_CLOSE, END_UPGRADE, END_MAXREQ };

typedef struct side {
    req q[MAXREQ + 1]; /* q[n] is the request in progress, if any */
    uint32_t n;        /* complete requests */
    int end;           /* END_* */
    int err;           /* ugate: error_status; llhttp: llhttp_errno */
    const char *reason;
    uint32_t err_pos; /* llhttp: offset of the error */
} side;

static side U, L;
static int verbose;
static const char *noabort_dir; /* UG_DIFF_NOABORT */
static const char *only;        /* UG_DIFF_ONLY */
static jmp_buf disagree_jmp;
static const char *g_ubuf; /* ugate's copy: its spans point into it */

/* Deliberate differences patched out of llhttp's copy, per request (deliberate_difference). */
enum { P_VERSION = 1u << 0, P_CHUNK_EXT = 1u << 1, P_TARGET_HIGH = 1u << 2, P_TRAILER = 1u << 3 };
static unsigned lpatch[MAXREQ];

/* ---- reporting ---------------------------------------------------------------------- */

static void dump(const char *what, const uint8_t *d, size_t n) {
    fprintf(stderr, "%s (%zu bytes): \"", what, n);
    for (size_t i = 0; i < n && i < 2048; i++) {
        unsigned char c = d[i];
        if (c == '\r')
            fputs("\\r", stderr);
        else if (c == '\n')
            fputs("\\n", stderr);
        else if (c == '\t')
            fputs("\\t", stderr);
        else if (c == '"' || c == '\\')
            fprintf(stderr, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputs(n > 2048 ? "\"...\n" : "\"\n", stderr);
}

static void dump_str(const char *what, str s) {
    dump(what, (const uint8_t *)s.p, s.n);
}

static const uint8_t *g_data;
static const char *g_data_c; /* the same, as chars */
static size_t g_size;

static void side_summary(const char *name, const side *s) {
    static const char *ends[] = {"incomplete", "error", "closed", "upgrade", "max requests"};
    fprintf(stderr, "  %s: %u complete request(s), then %s", name, s->n, ends[s->end]);
    if (s->end == END_ERROR)
        fprintf(stderr, " %d (%s)%s", s->err, s->reason ? s->reason : "",
                s == &L ? "" : " [ugate status]");
    if (s == &L && s->end == END_ERROR) fprintf(stderr, " at offset %u", s->err_pos);
    fputc('\n', stderr);
}

/* UG_DIFF_NOABORT: the kinds of disagreement seen, by message and the parsers' reasons. */
#define NKINDS 256
static struct {
    char *key;
    unsigned long count;
} kinds[NKINDS];

static int new_kind(const char *fmt, const char *field, unsigned *id, unsigned long *count) {
    char key[512];
    snprintf(key, sizeof key, "%s|%s|%s", fmt, field,
             L.end == END_ERROR && strstr(fmt, "rejects") ? L.reason : "");
    unsigned i;
    for (i = 0; i < NKINDS && kinds[i].key; i++)
        if (!strcmp(kinds[i].key, key)) break;
    if (i == NKINDS) i = NKINDS - 1; /* table full: lump the rest together */
    if (!kinds[i].key) kinds[i].key = strdup(key);
    *id = i;
    *count = ++kinds[i].count;
    return *count == 1;
}

static void disagree(const char *fmt, unsigned i, const char *field) {
    if (only) {
        char msg[512];
        snprintf(msg, sizeof msg, fmt, i, field);
        if (!strstr(msg, only) && !(L.reason && strstr(L.reason, only)))
            longjmp(disagree_jmp, 1);
    }
    if (noabort_dir) {
        unsigned id;
        unsigned long count;
        int first = new_kind(fmt, field, &id, &count);
        if (count <= 3) {
            char path[4096];
            snprintf(path, sizeof path, "%s/diff-%03u-%lu", noabort_dir, id, count);
            FILE *f = fopen(path, "wb");
            if (f) {
                fwrite(g_data, 1, g_size, f);
                fclose(f);
            }
        }
        if (!first) longjmp(disagree_jmp, 1);
        fprintf(stderr, "\n==== [kind %u]", id);
    }
    fprintf(stderr, "\n==== ugate/llhttp framing disagreement: ");
    fprintf(stderr, fmt, i, field);
    fputc('\n', stderr);
    side_summary("ugate ", &U);
    side_summary("llhttp", &L);
    if (i < U.n && i < L.n) {
        const req *u = &U.q[i], *l = &L.q[i];
        fprintf(stderr, "  request %u: ugate [%u,%u) llhttp [%u,%u)\n", i, u->start, u->end,
                l->start, l->end);
        dump_str("  ugate  method", u->method);
        dump_str("  llhttp method", l->method);
        dump_str("  ugate  target", u->target);
        dump_str("  llhttp target", l->target);
        fprintf(stderr, "  version ugate %d.%d llhttp %d.%d; keep-alive ugate %d llhttp %d\n",
                u->major, u->minor, l->major, l->minor, u->keep_alive, l->keep_alive);
        fprintf(stderr, "  headers ugate %u llhttp %u\n", u->nh, l->nh);
        for (uint32_t k = 0; k < MAXH && (k < u->nh || k < l->nh); k++) {
            if (k < u->nh) {
                dump_str("   ugate  name ", u->h[k].name);
                dump_str("   ugate  value", u->h[k].value);
            }
            if (k < l->nh) {
                dump_str("   llhttp name ", l->h[k].name);
                dump_str("   llhttp value", l->h[k].value);
            }
        }
        dump_str("  ugate  body", u->body);
        dump_str("  llhttp body", l->body);
    }
    dump("  input", g_data, g_size);
    if (noabort_dir) longjmp(disagree_jmp, 1);
    abort();
}

/* ugate rejected a request that llhttp completed: a table of reasons, printed at exit. */
#define NREASONS 64
static struct {
    const char *reason;
    int status;
    unsigned long count;
} stricter[NREASONS];
static unsigned long n_stricter, n_deliberate, n_inputs;
static const char *deliberate_names[16];
static unsigned long deliberate_count[16];

static void count_reason(const char *reason, int status) {
    n_stricter++;
    for (int i = 0; i < NREASONS; i++) {
        if (!stricter[i].reason) {
            stricter[i].reason = reason;
            stricter[i].status = status;
        }
        if (stricter[i].reason == reason) {
            stricter[i].count++;
            return;
        }
    }
}

static void count_deliberate(const char *name) {
    n_deliberate++;
    for (int i = 0; i < 16; i++) {
        if (!deliberate_names[i]) deliberate_names[i] = name;
        if (deliberate_names[i] == name) {
            deliberate_count[i]++;
            break;
        }
    }
    if (verbose) {
        fprintf(stderr, "[ug-diff] deliberate difference: %s\n", name);
        dump("[ug-diff]   input", g_data, g_size);
    }
}

static void report_at_exit(void) {
    for (int i = 0; i < NKINDS && kinds[i].key; i++)
        fprintf(stderr, "[ug-diff] disagreement kind %d: %lu x %s\n", i, kinds[i].count,
                kinds[i].key);
    fprintf(stderr,
            "[ug-diff] %lu inputs; ugate stricter (rejects a request llhttp completes): %lu; "
            "deliberate differences: %lu\n",
            n_inputs, n_stricter, n_deliberate);
    for (int i = 0; i < NREASONS && stricter[i].reason; i++)
        fprintf(stderr, "[ug-diff]   %8lu  ugate %d %s\n", stricter[i].count, stricter[i].status,
                stricter[i].reason);
    for (int i = 0; i < 16 && deliberate_names[i]; i++)
        fprintf(stderr, "[ug-diff]   %8lu  deliberate: %s\n", deliberate_count[i],
                deliberate_names[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *v = getenv("UG_DIFF_VERBOSE");
    verbose = v && *v && strcmp(v, "0") != 0;
    const char *d = getenv("UG_DIFF_NOABORT");
    noabort_dir = d && *d ? d : NULL;
    d = getenv("UG_DIFF_ONLY");
    only = d && *d ? d : NULL;
    if (verbose || noabort_dir) atexit(report_at_exit);
    return 0;
}

/* ---- ugate -------------------------------------------------------------------------- */

static str ustr(const char *base, ug__span s) {
    return (str){base + s.off, s.len};
}

/* buf is a writable copy of the input (chunked bodies are de-chunked in place). */
static void run_ugate(char *buf, uint32_t size) {
    static ug__http_header headers[64];
    memset(&U, 0, sizeof U);
    uint32_t off = 0;
    for (;;) {
        if (U.n == MAXREQ) {
            U.end = END_MAXREQ;
            return;
        }
        ug__http_req r;
        ug__http_req_init(&r, &LIMITS, headers);
        char *base = buf + off;
        int res = ug__http_parse(&r, base, size - off);
        while (res == UG_HTTP_HEADERS_DONE) res = ug__http_parse(&r, base, size - off);
        if (res == UG_HTTP_ERROR) {
            U.end = END_ERROR;
            U.err = r.error_status;
            U.reason = r.error_reason;
            return;
        }
        if (res != UG_HTTP_DONE) {
            U.end = END_INCOMPLETE;
            return;
        }
        if (r.consumed == 0 || r.consumed > size - off) abort(); /* API contract */
        req *q = &U.q[U.n++];
        q->method = ustr(base, r.method);
        q->target = ustr(base, r.target);
        q->body = ustr(base, r.body);
        q->major = r.http_major;
        q->minor = r.http_minor;
        q->nh = r.nheaders;
        for (uint32_t k = 0; k < r.nheaders && k < MAXH; k++) {
            q->h[k].name = ustr(base, r.headers[k].name);
            q->h[k].value = ustr(base, r.headers[k].value);
        }
        q->keep_alive = (r.flags & UG_HTTP_KEEP_ALIVE) != 0;
        q->chunked = (r.flags & UG_HTTP_CHUNKED) != 0;
        q->head_end = off + r.header_bytes;
        q->start = off;
        q->end = off + r.consumed;
        off += r.consumed;
        if (!q->keep_alive) { /* the server answers and closes */
            U.end = END_CLOSE;
            return;
        }
    }
}

/* ---- llhttp ------------------------------------------------------------------------- */

/* llhttp's pieces are copied into one arena: a field's pieces arrive back to back, so each
 * field stays contiguous. Every piece is a distinct part of the input: size bytes suffice. */
static char *arena;
static uint32_t arena_used, arena_cap;
static int l_in_msg, l_last; /* l_last: 1 after a field-name piece, 2 after a value piece */
static int l_trailers;       /* the headers now arriving are trailer fields */
static uint32_t l_msg_start;

static void append(str *s, const char *at, size_t n) {
    if (n > arena_cap - arena_used) abort();
    if (!s->n) s->p = arena + arena_used;
    if (s->p + s->n != arena + arena_used) abort(); /* pieces of one field not adjacent */
    memcpy(arena + arena_used, at, n);
    arena_used += (uint32_t)n;
    s->n += (uint32_t)n;
}

static req *lcur(void) {
    return &L.q[L.n];
}

static int l_begin(llhttp_t *p) {
    (void)p;
    if (L.n == MAXREQ) return -1; /* ends the run; END_MAXREQ below */
    memset(lcur(), 0, sizeof(req));
    l_in_msg = 1;
    l_last = 0;
    l_trailers = 0;
    return 0;
}

static int l_method(llhttp_t *p, const char *at, size_t n) {
    (void)p;
    append(&lcur()->method, at, n);
    return 0;
}

static int l_url(llhttp_t *p, const char *at, size_t n) {
    (void)p;
    append(&lcur()->target, at, n);
    return 0;
}

static int l_field(llhttp_t *p, const char *at, size_t n) {
    (void)p;
    req *q = lcur();
    if (l_trailers) return 0; /* ugate does not report trailer fields */
    if (l_last != 1) {
        q->nh++;
        l_last = 1;
    }
    if (q->nh <= MAXH) append(&q->h[q->nh - 1].name, at, n);
    return 0;
}

static int l_value(llhttp_t *p, const char *at, size_t n) {
    (void)p;
    req *q = lcur();
    if (l_trailers) return 0;
    l_last = 2;
    if (q->nh && q->nh <= MAXH) append(&q->h[q->nh - 1].value, at, n);
    return 0;
}

static int l_headers_complete(llhttp_t *p) {
    req *q = lcur();
    q->major = p->http_major;
    q->minor = p->http_minor;
    q->upgrade = p->upgrade;
    l_trailers = 1;
    /* OWS around a field value is not part of it (RFC 9110 5.5); ugate trims SP/HTAB. */
    for (uint32_t k = 0; k < q->nh && k < MAXH; k++) {
        str *v = &q->h[k].value;
        while (v->n && (v->p[0] == ' ' || v->p[0] == '\t')) v->p++, v->n--;
        while (v->n && (v->p[v->n - 1] == ' ' || v->p[v->n - 1] == '\t')) v->n--;
    }
    return 0;
}

static int l_body(llhttp_t *p, const char *at, size_t n) {
    (void)p;
    append(&lcur()->body, at, n);
    return 0;
}

static int l_message_complete(llhttp_t *p) {
    lcur()->keep_alive = llhttp_should_keep_alive(p);
    l_in_msg = 0;
    L.n++;
    return HPE_PAUSED; /* so that llhttp_execute returns where the message ends */
}

static void run_llhttp(const char *d, uint32_t size) {
    static llhttp_settings_t settings;
    static int settings_ready;
    if (!settings_ready) {
        llhttp_settings_init(&settings);
        settings.on_message_begin = l_begin;
        settings.on_method = l_method;
        settings.on_url = l_url;
        settings.on_header_field = l_field;
        settings.on_header_value = l_value;
        settings.on_headers_complete = l_headers_complete;
        settings.on_body = l_body;
        settings.on_message_complete = l_message_complete;
        settings_ready = 1;
    }
    memset(&L, 0, sizeof L);
    l_in_msg = 0;
    arena_used = 0;
    llhttp_t p;
    llhttp_init(&p, HTTP_REQUEST, &settings);
    /* strict: no lenient flag (llhttp_init clears them; say so anyway) */
    llhttp_set_lenient_headers(&p, 0);
    llhttp_set_lenient_chunked_length(&p, 0);
    llhttp_set_lenient_keep_alive(&p, 0);
    llhttp_set_lenient_transfer_encoding(&p, 0);
    if (p.lenient_flags) abort();

    uint32_t pos = 0;
    l_msg_start = 0;
    for (;;) {
        llhttp_errno_t e = llhttp_execute(&p, d + pos, size - pos);
        if (e == HPE_PAUSED) { /* a message ended at error_pos */
            uint32_t at = (uint32_t)(llhttp_get_error_pos(&p) - d);
            L.q[L.n - 1].start = l_msg_start;
            L.q[L.n - 1].end = at;
            l_msg_start = pos = at;
            llhttp_resume(&p);
            continue;
        }
        if (e == HPE_OK) {
            L.end = END_INCOMPLETE;
        } else if (e == HPE_PAUSED_UPGRADE) {
            L.end = END_UPGRADE;
        } else if (e == HPE_CB_MESSAGE_BEGIN && L.n == MAXREQ) {
            L.end = END_MAXREQ;
        } else {
            L.end = END_ERROR;
            L.err = e;
            L.reason = llhttp_get_error_reason(&p);
            const char *ep = llhttp_get_error_pos(&p);
            L.err_pos = ep ? (uint32_t)(ep - d) : pos;
        }
        return;
    }
}

/* ---- comparison --------------------------------------------------------------------- */

static int str_eq(str a, str b) {
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* ---- deliberate differences (docs/parser-differences.md) -------------------------- */

static unsigned char lc(unsigned char c) {
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

static int ieq_lit(const char *a, uint32_t n, const char *lit) {
    if (n != strlen(lit)) return 0;
    for (uint32_t k = 0; k < n; k++)
        if (lc((unsigned char)a[k]) != (unsigned char)lit[k]) return 0;
    return 1;
}

/* Does one of the request's Connection fields (as ugate reports them) list option opt? */
static int connection_has(const req *u, const char *opt) {
    for (uint32_t k = 0; k < u->nh && k < MAXH; k++) {
        if (!ieq_lit(u->h[k].name.p, u->h[k].name.n, "connection")) continue;
        const char *v = u->h[k].value.p;
        uint32_t n = u->h[k].value.n, i = 0;
        while (i <= n) {
            uint32_t a = i, e;
            while (i < n && v[i] != ',') i++;
            e = i++;
            while (a < e && (v[a] == ' ' || v[a] == '\t')) a++;
            while (e > a && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
            if (ieq_lit(v + a, e - a, opt)) return 1;
        }
    }
    return 0;
}

/* Where the trailer section of ugate's chunked request u starts in the input d: after the
 * last-chunk line. ugate accepted the body, so it is well-formed; this walks it again. */
static uint32_t trailer_start(const char *d, const req *u) {
    uint32_t p = u->head_end;
    for (;;) {
        uint64_t size = 0;
        for (; p < u->end && isxdigit((unsigned char)d[p]); p++)
            size = size * 16 + (uint64_t)(isdigit((unsigned char)d[p]) ? d[p] - '0' : lc((unsigned char)d[p]) - 'a' + 10);
        while (p < u->end && d[p] != '\n') p++;
        p++;
        if (!size || p >= u->end) return p;
        p += (uint32_t)size + 2;
    }
}

/* The line around offset at: [*ls, *le), le at its CR (or lim). */
static void line_around(const char *d, uint32_t at, uint32_t from, uint32_t lim, uint32_t *ls,
                        uint32_t *le) {
    uint32_t a = at;
    while (a > from && d[a - 1] != '\n') a--;
    uint32_t e = a;
    while (e < lim && d[e] != '\r' && d[e] != '\n') e++;
    *ls = a;
    *le = e;
}

static int tchar(unsigned char c) {
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* An independent check of RFC 9112 7.1.1 for d[p..e), what follows the chunk size:
 * *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] ) */
static int chunk_ext_ok(const char *d, uint32_t p, uint32_t e) {
#define BWS() while (p < e && (d[p] == ' ' || d[p] == '\t')) p++
    while (p < e) {
        BWS();
        if (p == e || d[p++] != ';') return 0;
        BWS();
        uint32_t t = p;
        while (p < e && tchar((unsigned char)d[p])) p++;
        if (p == t) return 0;
        uint32_t save = p;
        BWS();
        if (p < e && d[p] == '=') {
            p++;
            BWS();
            if (p < e && d[p] == '"') {
                for (p++;; p++) {
                    if (p >= e) return 0;
                    unsigned char c = (unsigned char)d[p];
                    if (c == '"') break;
                    if (c == '\\') c = (unsigned char)d[++p];
                    if (p >= e || (c < 0x20 && c != '\t') || c == 0x7f) return 0;
                }
                p++;
            } else {
                t = p;
                while (p < e && tchar((unsigned char)d[p])) p++;
                if (p == t) return 0;
            }
        } else {
            p = save;
        }
    }
    return 1;
#undef BWS
}

/* The chunk-size line [ls, le) of ugate's request: if it has extensions and they pass the
 * independent check, llhttp's copy gets ";xxx..." for them. 1 if patched now. */
static int patch_chunk_ext(char *lbuf, uint32_t ls, uint32_t le) {
    uint32_t hx = ls;
    while (hx < le && isxdigit((unsigned char)g_data_c[hx])) hx++;
    if (hx == ls || hx + 1 >= le || !chunk_ext_ok(g_data_c, hx, le)) return 0;
    int already = lbuf[hx] == ';';
    for (uint32_t k = hx + 1; k < le && already; k++) already = lbuf[k] == 'x';
    if (already) return 0;
    lbuf[hx] = ';';
    memset(lbuf + hx + 1, 'x', le - hx - 1);
    return 1;
}

static int reason_is(const char *lit) {
    return L.reason && !strcmp(L.reason, lit);
}

static int reason_has(const char *lit) {
    return L.reason && strstr(L.reason, lit);
}

/* The patches, each applied to one of ugate's requests j in llhttp's copy; 1 if it changed
 * something. Once a difference is recognised at request i, its patch is applied to every
 * request from i on in the same round (one llhttp run per kind, not per request). */

static uint32_t target_end(const req *u) {
    return (uint32_t)(u->target.p - g_ubuf) + u->target.n;
}

/* HTTP/1.x, x >= 2 -> HTTP/1.1 */
static int patch_version(char *lbuf, unsigned j) {
    const req *u = &U.q[j];
    uint32_t minor = target_end(u) + 8; /* " HTTP/1." */
    if (u->major != 1 || u->minor < 2 || minor >= u->head_end || lbuf[minor] < '2' ||
        lbuf[minor] > '9')
        return 0;
    lbuf[minor] = '1';
    lpatch[j] |= P_VERSION;
    return 1;
}

/* bytes 0x80-0xFF of the request-target -> 'x' */
static int patch_target_high(char *lbuf, unsigned j) {
    const req *u = &U.q[j];
    int done = 0;
    for (uint32_t k = target_end(u) - u->target.n; k < target_end(u); k++)
        if ((unsigned char)lbuf[k] >= 0x80) lbuf[k] = 'x', done = 1;
    if (done) lpatch[j] |= P_TARGET_HIGH;
    return done;
}

/* every chunk-size line's extensions that pass the independent check -> ";xxx..." */
static int patch_chunk_exts(char *lbuf, unsigned j) {
    const req *u = &U.q[j];
    if (!u->chunked) return 0;
    uint32_t ts = trailer_start(g_data_c, u);
    int done = 0;
    for (uint32_t p = u->head_end; p < ts;) {
        uint32_t e = p;
        uint64_t size = 0;
        for (; isxdigit((unsigned char)g_data_c[e]); e++)
            size = size * 16 + (uint64_t)(isdigit((unsigned char)g_data_c[e])
                                              ? g_data_c[e] - '0'
                                              : lc((unsigned char)g_data_c[e]) - 'a' + 10);
        while (g_data_c[e] != '\r') e++; /* ugate accepted the body: CRLF-ended lines */
        done |= patch_chunk_ext(lbuf, p, e);
        p = e + 2 + (size ? (uint32_t)size + 2 : 0);
    }
    if (done) lpatch[j] |= P_CHUNK_EXT;
    return done;
}

static void patch_from(char *lbuf, unsigned i, int (*patch)(char *, unsigned)) {
    for (unsigned j = i + 1; j < U.n; j++) patch(lbuf, j);
}

/* Request i, which ugate completed and llhttp rejected: is it a difference ugate makes on
 * purpose? Returns its name, or NULL. *patched says whether llhttp's copy lbuf was patched
 * (llhttp then runs again); if not, requests from i on are not compared. */
static const char *deliberate_difference(unsigned i, char *lbuf, int *patched) {
    const req *u = &U.q[i];
    *patched = 0;
    if (L.end != END_ERROR || L.err_pos < u->start || L.err_pos >= u->end) return NULL;
    uint32_t at = L.err_pos, ls, le, tend = target_end(u);
    /* 1. HTTP/1.x with x >= 2: RFC 9110 2.5 / 6.2, a 1.1 server takes a later 1.x minor
     *    version as 1.1; llhttp strict takes only 1.0 and 1.1. Patched to 1.1. */
    if (reason_is("Invalid HTTP version") && (at == tend + 8 || at == tend + 9) &&
        patch_version(lbuf, i)) {
        patch_from(lbuf, i, patch_version);
        *patched = 1;
        return "HTTP/1.x, x >= 2, taken as 1.1";
    }
    /* 2. Bytes 0x80-0xFF in the request-target (raw UTF-8): ugate passes them on, llhttp
     *    strict refuses them. Patched to 'x'; the targets are compared modulo the patch. */
    if (reason_has("Invalid char in url") && (unsigned char)lbuf[at] >= 0x80 &&
        at >= tend - u->target.n && at < tend && patch_target_high(lbuf, i)) {
        patch_from(lbuf, i, patch_target_high);
        *patched = 1;
        return "byte 0x80-0xFF in the request-target";
    }
    if (!u->chunked || at < u->head_end) return NULL;
    uint32_t ts = trailer_start(g_data_c, u);
    /* 3. Chunk extensions that RFC 9112 7.1.1 allows and llhttp 8.1 refuses: BWS around ";"
     *    and "=", quoted-pair in a quoted value, an extension after one with a value.
     *    Extensions do not change the framing; if the line's extensions pass an independent
     *    check of the grammar, llhttp gets ";xxx..." instead (on every such line). */
    if (at < ts && reason_has("chunk")) {
        line_around(g_data_c, at, u->head_end, u->end, &ls, &le);
        if (!patch_chunk_ext(lbuf, ls, le)) return NULL; /* not an extension llhttp refuses */
        patch_chunk_exts(lbuf, i);
        lpatch[i] |= P_CHUNK_EXT;
        patch_from(lbuf, i, patch_chunk_exts);
        *patched = 1;
        return "chunk extension allowed by RFC 9112 7.1.1, refused by llhttp 8.1";
    }
    /* 4. A trailer field llhttp gives meaning to (Transfer-Encoding, Content-Length): ugate
     *    discards the trailer section (RFC 9110 6.5.1: framing fields are not merged from it),
     *    llhttp treats them as framing headers. The name gets an X for llhttp. (llhttp may
     *    report the error on the line after the field.) */
    for (int back = 0; back < 2 && at >= ts; back++) {
        line_around(g_data_c, at, ts, u->end, &ls, &le);
        uint32_t c = ls;
        while (c < le && g_data_c[c] != ':') c++;
        if (c < le && (ieq_lit(g_data_c + ls, c - ls, "transfer-encoding") ||
                       ieq_lit(g_data_c + ls, c - ls, "content-length")) &&
            lbuf[ls] != 'X') {
            lbuf[ls] = 'X';
            lpatch[i] |= P_TRAILER;
            *patched = 1;
            return "framing field in the trailer section";
        }
        if (ls < ts + 2) break;
        at = ls - 2; /* the line before */
    }
    return NULL;
}

/* Does a Connection field of u, as sent (up to its CR), hold an option followed by OWS with
 * an HTAB in it? */
static int connection_option_then_tab(const req *u) {
    for (uint32_t k = 0; k < u->nh && k < MAXH; k++) {
        if (!ieq_lit(u->h[k].name.p, u->h[k].name.n, "connection")) continue;
        for (const char *v = u->h[k].value.p; *v != '\r'; v++) { /* ugate's copy: CRLF-ended */
            if (!tchar((unsigned char)v[0])) continue;
            const char *w = v + 1; /* the OWS after an option's last byte */
            while (*w == ' ') w++;
            if (*w == '\t') return 1;
        }
    }
    return 0;
}

/* Is there a field named name in the trailer section of ugate's chunked request u? */
static int trailer_has(const req *u, const char *name) {
    if (!u->chunked) return 0;
    for (uint32_t p = trailer_start(g_data_c, u); p < u->end;) {
        uint32_t ls, le, c;
        line_around(g_data_c, p, p, u->end, &ls, &le);
        for (c = ls; c < le && g_data_c[c] != ':'; c++) {
        }
        if (c < le && ieq_lit(g_data_c + ls, c - ls, name)) return 1;
        p = le + 2;
    }
    return 0;
}

/* Compare request i; returns 1 if a deliberate difference ends the comparison after it. */
static int compare_req(unsigned i) {
    const req *u = &U.q[i], *l = &L.q[i];
    int cut_after = 0;
    if (!str_eq(u->method, l->method)) disagree("request %u: %s", i, "method");
    if (lpatch[i] & P_TARGET_HIGH) { /* llhttp was given 'x' for ugate's bytes >= 0x80 */
        int same = u->target.n == l->target.n;
        for (uint32_t k = 0; same && k < u->target.n; k++)
            same = u->target.p[k] == l->target.p[k] ||
                   ((unsigned char)u->target.p[k] >= 0x80 && l->target.p[k] == 'x');
        if (!same) disagree("request %u: %s", i, "request-target (0x80-0xFF patched to x)");
    } else if (!str_eq(u->target, l->target)) {
        disagree("request %u: %s", i, "request-target");
    }
    if (lpatch[i] & P_VERSION) { /* llhttp was given 1.1 for ugate's 1.x, x >= 2 */
        if (u->major != 1 || u->minor < 2 || l->major != 1 || l->minor != 1)
            disagree("request %u: %s", i, "version (1.x patched to 1.1 for llhttp)");
    } else if (u->major != l->major || u->minor != l->minor) {
        disagree("request %u: %s", i, "version");
    }
    if (u->nh != l->nh) disagree("request %u: %s", i, "header count");
    for (uint32_t k = 0; k < u->nh && k < MAXH; k++) {
        if (!str_eq(u->h[k].name, l->h[k].name)) disagree("request %u: %s", i, "header name");
        if (!str_eq(u->h[k].value, l->h[k].value)) disagree("request %u: %s", i, "header value");
    }
    if (!str_eq(u->body, l->body)) disagree("request %u: %s", i, "body");
    if (u->keep_alive != l->keep_alive) {
        /* 5. HTTP/1.0 with both "keep-alive" and "close": RFC 9112 9.3, close wins (ugate);
         *    llhttp 8.1 keeps the connection. */
        if (!u->keep_alive && u->major == 1 && u->minor == 0 && connection_has(u, "close") &&
            connection_has(u, "keep-alive")) {
            count_deliberate("HTTP/1.0 with keep-alive and close: ugate closes");
            cut_after = 1;
        /* 6. "Connection: close" in the trailer section: llhttp acts on it, ugate discards
         *    the trailer section (RFC 9110 6.5.1: a control field is not merged from it). */
        } else if (u->keep_alive && trailer_has(u, "connection")) {
            count_deliberate("Connection in the trailer section: ugate ignores it");
            cut_after = 1;
        /* 7. "Connection: close<HTAB>" / "keep-alive<HTAB>": HTAB is OWS (RFC 9110 5.6.3) and
         *    ugate trims it; llhttp 8.1 does not recognise an option followed by HTAB. */
        } else if (connection_option_then_tab(u)) {
            count_deliberate("Connection option followed by HTAB");
            cut_after = 1;
        } else {
            disagree("request %u: %s", i, "keep-alive");
        }
    }
    if (u->start != l->start || u->end != l->end) disagree("request %u: %s", i, "end offset");
    return cut_after;
}

static int is_limit(int status) {
    return status == 413 || status == 414 || status == 431;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 65536) return 0;
    n_inputs++;
    g_data = data;
    g_data_c = (const char *)data;
    g_size = size;
    char *ubuf = malloc(size ? size : 1), *lbuf = malloc(size ? size : 1);
    arena = malloc(size ? size : 1);
    if (!ubuf || !lbuf || !arena) abort();
    memcpy(ubuf, data, size);
    memcpy(lbuf, data, size);
    g_ubuf = ubuf;
    arena_cap = (uint32_t)size;
    memset(lpatch, 0, sizeof lpatch);

    if (setjmp(disagree_jmp)) goto out; /* UG_DIFF_NOABORT */
    run_ugate(ubuf, (uint32_t)size);
    for (int round = 0;; round++) {
        /* each patch changes bytes that no patch matches again */
        if (round > (int)size + 1) abort();
        run_llhttp(lbuf, (uint32_t)size);

        /* Requests from `cut` on are not compared. */
        unsigned cut = MAXREQ;
        if (U.end == END_ERROR && is_limit(U.err) && U.n < cut) cut = U.n;
        for (unsigned i = 0; i <= L.n && i < cut; i++) /* q[L.n]: in progress, or zeroed */
            if (L.q[i].upgrade) cut = i; /* upgrades (and CONNECT) are out of scope */
        unsigned nu = U.n < cut ? U.n : cut, nl = L.n < cut ? L.n : cut;

        int again = 0;
        for (unsigned i = 0; i < nu; i++) {
            if (i >= nl) {
                int patched;
                const char *why = deliberate_difference(i, lbuf, &patched);
                if (why) {
                    count_deliberate(why);
                    if (patched) {
                        again = 1;
                        break;
                    }
                    nu = nl = i;
                    break;
                }
                if (L.end == END_ERROR)
                    disagree("ugate completes request %u%s, llhttp rejects it", i, "");
                disagree("ugate completes request %u%s, llhttp does not", i,
                         L.end == END_INCOMPLETE ? " (llhttp wants more bytes)" : "");
            }
            if (compare_req(i)) {
                nu = nl = i + 1;
                break;
            }
        }
        if (again) continue;
        if (nl > nu) {
            /* llhttp completed request nu, ugate did not. */
            if (U.end == END_ERROR) {
                count_reason(U.reason, U.err);
                if (verbose) {
                    fprintf(stderr,
                            "[ug-diff] ugate rejects request %u that llhttp completes: %d %s\n",
                            nu, U.err, U.reason);
                    dump("[ug-diff]   input", data, size);
                }
            } else {
                disagree("llhttp completes request %u%s, ugate does not", nu,
                         U.end == END_INCOMPLETE ? " (ugate wants more bytes)" : "");
            }
        }
        break;
    }
out:
    free(ubuf);
    free(lbuf);
    free(arena);
    return 0;
}
