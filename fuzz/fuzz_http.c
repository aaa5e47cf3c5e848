/* libFuzzer driver for the parser glue (h2o's fuzz/ style). Each input is parsed three ways
 * — in one call, one byte at a time, and split at a point taken from the input — and the
 * three must agree on the outcome, the bytes consumed and the body. It is parsed twice more
 * with its body streamed (ug__http_body_begin(..., stream = 1), as body.c does: the body in
 * a buffer of its own, each piece handed out and dropped with ug__http_body_drop), in steps
 * of one byte and of a size taken from the input, dropping after every parse or only after
 * a piece with bytes (the first input byte's bit 0): the same outcome, total length, body and
 * trailers as buffered. Build with clang:
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DUGATE_FUZZ=ON && cmake --build build-fuzz
 *   build-fuzz/fuzz/fuzz_http -max_total_time=60 */
#include "http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct outcome {
    int result, status;
    uint32_t consumed;
    uint32_t body_len;
    char body[512];
    /* the trailer fields, "name: value\n" each (as ug__http_find_trailer would see them) */
    uint32_t ntrailers, trailers_len;
    char trailers[512];
} outcome;

static const ug__http_limits limits = {8192, 64, 4096, 1u << 20};

static void put_trailers(outcome *o, const ug__http_req *r, const char *base) {
    o->ntrailers = r->ntrailers;
    o->trailers_len = 0;
    for (uint32_t i = 0; i < r->ntrailers; i++) {
        const ug__http_header *h = &r->headers[r->nheaders + i];
        const ug__span parts[2] = {h->name, h->value};
        for (int k = 0; k < 2; k++) {
            for (uint32_t j = 0; j < parts[k].len && o->trailers_len < sizeof o->trailers; j++)
                o->trailers[o->trailers_len++] = base[parts[k].off + j];
            if (o->trailers_len < sizeof o->trailers) o->trailers[o->trailers_len++] = "\x1f\n"[k];
        }
        /* the lookup finds it (or an earlier field of the same name) */
        char name[64];
        if (h->name.len < sizeof name) {
            memcpy(name, base + h->name.off, h->name.len);
            int at = ug__http_find_trailer(r, base, name, h->name.len);
            if (at < (int)r->nheaders || at > (int)(r->nheaders + i)) abort();
        }
    }
}

/* Feed buf[0..size) in steps of the given sizes (0 = all at once); stop at DONE or ERROR. */
static void parse(const uint8_t *data, uint32_t size, uint32_t step, outcome *o) {
    ug__http_header headers[64];
    ug__http_req r;
    char *buf = malloc(size ? size : 1);
    if (!buf) abort();
    memcpy(buf, data, size);
    ug__http_req_init(&r, &limits, headers);
    int res = UG_HTTP_NEED_MORE;
    uint32_t avail = step ? 0 : size;
    for (;;) {
        if (step) avail = avail + step > size ? size : avail + step;
        res = ug__http_parse(&r, buf, avail);
        while (res == UG_HTTP_HEADERS_DONE) res = ug__http_parse(&r, buf, avail);
        if (res == UG_HTTP_DONE || res == UG_HTTP_ERROR || avail == size) break;
    }
    if (r.consumed > avail) abort(); /* never past what was given */
    o->result = res;
    o->status = res == UG_HTTP_ERROR ? r.error_status : 0;
    o->consumed = res == UG_HTTP_DONE ? r.consumed : 0;
    o->body_len = 0;
    if (res == UG_HTTP_DONE) {
        if (r.body.off + r.body.len > r.consumed) abort();
        o->body_len = r.body.len < sizeof o->body ? r.body.len : sizeof o->body;
        memcpy(o->body, buf + r.body.off, o->body_len);
        put_trailers(o, &r, buf);
    }
    free(buf);
}

/* The same input with its body streamed: the head parsed from the input, then (at the end
 * of the head) the bytes after it in a buffer of their own that more bytes are appended to,
 * step at a time; each piece is taken from offset 0 and dropped. drop_all: drop after every
 * parse, also when it gave no byte (the connection drops only after a piece with bytes). */
static void parse_stream(const uint8_t *data, uint32_t size, uint32_t step, int drop_all,
                         outcome *o) {
    ug__http_header headers[64];
    ug__http_req r;
    char *head = malloc(size ? size : 1), *sb = malloc(size ? size : 1);
    if (!head || !sb) abort();
    memcpy(head, data, size);
    ug__http_req_init(&r, &limits, headers);
    int res = UG_HTTP_NEED_MORE;
    uint32_t avail = 0;
    for (;;) { /* the head */
        avail = avail + step > size ? size : avail + step;
        res = ug__http_parse(&r, head, avail);
        if (res != UG_HTTP_NEED_MORE || avail == size) break;
    }
    uint32_t sblen = 0, fed = 0, body = 0;
    o->body_len = 0;
    int streaming = res == UG_HTTP_HEADERS_DONE;
    if (streaming) {
        uint32_t hb = r.header_bytes;
        if (hb > avail) abort();
        res = ug__http_body_begin(&r, limits.max_body_bytes, 1);
        fed = avail;
        memcpy(sb, head + hb, avail - hb); /* what came with the head */
        sblen = avail - hb;
    }
    while (streaming && (res == UG_HTTP_HEADERS_DONE || res == UG_HTTP_NEED_MORE)) {
        res = ug__http_parse(&r, sb, sblen);
        if (res == UG_HTTP_ERROR) break;
        if (r.body.off != 0 || r.body.len > sblen || r.consumed > sblen) abort();
        /* a piece: de-chunked bytes at offset 0 */
        for (uint32_t i = 0; i < r.body.len; i++, body++)
            if (body < sizeof o->body) o->body[body] = sb[i];
        if (res == UG_HTTP_DONE) break;
        if (r.body.len || drop_all) ug__http_body_drop(&r, sb, &sblen);
        if (fed == size) break; /* NEED_MORE with nothing left */
        uint32_t n = step < size - fed ? step : size - fed;
        memcpy(sb + sblen, data + fed, n);
        sblen += n;
        fed += n;
    }
    o->result = res;
    o->status = res == UG_HTTP_ERROR ? r.error_status : 0;
    o->consumed = 0;
    if (res == UG_HTTP_DONE) {
        /* the whole request: the head, what was dropped, what is left in the buffer */
        uint64_t whole = (uint64_t)r.header_bytes + r.body_dropped_ + r.consumed;
        if (whole > size || r.consumed > sblen) abort();
        o->consumed = (uint32_t)whole;
        o->body_len = body < sizeof o->body ? body : sizeof o->body;
        if (r.body_seen_ != body) abort(); /* every de-chunked byte counted once */
        put_trailers(o, &r, sb);
    }
    free(head);
    free(sb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 65536) return 0;
    outcome a, b, c;
    parse(data, (uint32_t)size, 0, &a);
    parse(data, (uint32_t)size, 1, &b);
    uint32_t split = size ? (uint32_t)(data[0] % size) + 1 : 1;
    parse(data, (uint32_t)size, split, &c);
    /* Accept vs reject, consumed bytes and body must not depend on how bytes arrive (the
     * error status itself may, for inputs with several faults). */
    if ((a.result == UG_HTTP_DONE) != (b.result == UG_HTTP_DONE) ||
        (a.result == UG_HTTP_DONE) != (c.result == UG_HTTP_DONE))
        abort();
    if (a.result == UG_HTTP_DONE &&
        (a.consumed != b.consumed || a.consumed != c.consumed || a.body_len != b.body_len ||
         a.body_len != c.body_len || memcmp(a.body, b.body, a.body_len) ||
         memcmp(a.body, c.body, a.body_len)))
        abort();
    /* Streamed, as body.c reads a UG_ROUTE_STREAM_BODY request: the same request. */
    int drop_all = size && (data[0] & 1);
    uint32_t sstep = size ? (uint32_t)(data[size - 1] % 97) + 1 : 1;
    outcome d, e;
    parse_stream(data, (uint32_t)size, 1, drop_all, &d);
    parse_stream(data, (uint32_t)size, sstep, !drop_all, &e);
    const outcome *st[2] = {&d, &e};
    for (int i = 0; i < 2; i++) {
        const outcome *x = st[i];
        if ((a.result == UG_HTTP_DONE) != (x->result == UG_HTTP_DONE)) abort();
        if (a.result != UG_HTTP_DONE) continue;
        if (x->consumed != a.consumed || x->body_len != a.body_len ||
            memcmp(x->body, a.body, a.body_len) || x->ntrailers != a.ntrailers ||
            x->trailers_len != a.trailers_len || memcmp(x->trailers, a.trailers, a.trailers_len))
            abort();
    }
    return 0;
}
