/* libFuzzer driver for the connection state machine: the input is a script for the simulated
 * kernel of test/sim_backend.c (format in sim_backend.h), which runs the whole core (server.c,
 * conn.c, response.c, http.c, timer.c) with the fault hooks on and checks the backend contract
 * and the server's behaviour; any violation aborts. Build with clang:
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DUGATE_FUZZ=ON && cmake --build build-fuzz
 *   build-fuzz/fuzz/fuzz_conn -jobs=1 -workers=1 -max_len=2048 fuzz/corpus/conn
 * UGATE_SIM_TRACE=1 traces a run (with one input); UGATE_SIM_WAIVE=<mask> tolerates the known
 * defects of enum sim_waive. */
#include "sim_backend.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int init;
    static sim_opts o;
    if (!init) {
        init = 1;
        sim_opts_init(&o);
        const char *w = getenv("UGATE_SIM_WAIVE");
        if (w) o.waive = (unsigned)strtoul(w, NULL, 0);
        o.trace = getenv("UGATE_SIM_TRACE") != NULL;
    }
    if (size > 8192) return 0;
    sim_result r;
    if (sim_run(data, size, &o, &r)) {
        fprintf(stderr, "fuzz_conn: %u violation(s), the first at %s\n", r.violations, r.first);
        abort();
    }
    return 0;
}
