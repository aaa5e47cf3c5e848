/* libFuzzer driver for the parser glue (h2o's fuzz/ style). Each input is parsed three ways
 * — in one call, one byte at a time, and split at a point taken from the input — and the
 * three must agree on the outcome, the bytes consumed and the body. Build with clang:
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
} outcome;

/* Feed buf[0..size) in steps of the given sizes (0 = all at once); stop at DONE or ERROR. */
static void parse(const uint8_t *data, uint32_t size, uint32_t step, outcome *o) {
    static const ug__http_limits limits = {8192, 64, 4096, 1u << 20};
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
    }
    free(buf);
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
    return 0;
}
