/* The configuration: its defaults, and the one pass that resolves and checks what a caller
 * gave (ug_server_create). */
#include "core.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

/* Slots beyond max_conns in each loop: accept completions already posted when the gate
 * pauses still get a slot (they are live connections and must be served). */
#define SLOT_HEADROOM 4096u

void ug_config_init(ug_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 8080;
    cfg->backlog = 4096;
    cfg->listen_fd = -1;
    cfg->backend = UG_BACKEND_AUTO;
    cfg->threads = 1;
    cfg->max_conns = 16384;
    cfg->max_header_bytes = 8192;
    cfg->max_headers = 64;
    cfg->max_uri_bytes = 4096;
    cfg->max_body_bytes = 1u << 20;
    cfg->max_output_bytes = 256u << 10;
    cfg->idle_timeout_ms = 60000;
    cfg->read_header_timeout_ms = 10000;
    cfg->body_timeout_ms = 30000;
    cfg->write_timeout_ms = 30000;
    cfg->handler_timeout_ms = 30000;
    cfg->max_inflight = 8192;
    cfg->linger_ms = 1000;
    cfg->gate_settle_ms = 1;
    cfg->ring_entries = 1024;
    cfg->recv_buffers = 1024;
    cfg->recv_buffer_size = 4096;
    cfg->server_name = "ugate";
}

/* Visible ASCII and inner spaces only, not empty: it goes into every response head as is
 * (RFC 9110 10.2.4: products and comments separated by whitespace). */
static int server_name_ok(const char *name) {
    if (!name) return 1;
    size_t n = strlen(name);
    if (n == 0 || n > UG_SERVER_NAME_MAX || name[0] == ' ' || name[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e) return 0;
    return 1;
}

/* The CPUs this process may run on (at least 1). */
static uint32_t affinity_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? (uint32_t)n : 1;
}

int ug__config_resolve(const ug_config *in, ug_config *out) {
    ug_config defaults;
    ug_config_init(&defaults);
    *out = in ? *in : defaults;
    ug_config *cfg = out;
#define DEF(f)                                                                                     \
    if (!cfg->f) cfg->f = defaults.f
    DEF(backlog);
    DEF(threads);
    DEF(max_conns);
    DEF(max_header_bytes);
    DEF(max_headers);
    DEF(max_uri_bytes);
    DEF(max_body_bytes);
    DEF(max_output_bytes);
    DEF(max_inflight);
    DEF(ring_entries);
    DEF(recv_buffers);
    DEF(recv_buffer_size);
#undef DEF
    if (!cfg->host) cfg->host = defaults.host;
    if (cfg->threads == UG_THREADS_AUTO) {
        cfg->threads = affinity_cpus();
        if (cfg->threads > UG_MAX_LOOPS) cfg->threads = UG_MAX_LOOPS;
    }
    if (cfg->threads > UG_MAX_LOOPS || cfg->max_header_bytes > 65536 ||
        cfg->max_uri_bytes > cfg->max_header_bytes ||
        cfg->max_conns > UG_ID_SLOT_MASK - SLOT_HEADROOM ||
        cfg->max_body_bytes > UG__BUFFERED_BODY_MAX || cfg->max_headers > 4096 ||
        cfg->recv_buffers > 32768 || cfg->recv_buffer_size > (1u << 20) ||
        cfg->max_output_bytes > (1u << 30) || !server_name_ok(cfg->server_name))
        return -EINVAL;
    return 0;
}

uint32_t ug__config_slots(const ug_config *cfg) {
    return cfg->max_conns + SLOT_HEADROOM;
}
