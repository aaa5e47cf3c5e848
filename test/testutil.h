/* Shared helpers for the CUnit test programs. */
#ifndef UG_TESTUTIL_H
#define UG_TESTUTIL_H

#include <CUnit/Basic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Run every registered suite; returns the process exit status (0 all passed, 1 failures,
 * 77 skipped). watchdog_s arms alarm(2) so that a hung test kills the program. */
int tu_main(void (*register_suites)(void), unsigned watchdog_s);

/* Exit 77 (skip) with a message if the kernel refuses io_uring. Call before anything that
 * needs it. Returns only when io_uring works. */
void tu_require_uring(void);
/* 1 if io_uring_setup works here, else 0. */
int tu_uring_available(void);

/* Blocking TCP connect to 127.0.0.1:port with 5 s send/receive timeouts. -1 on error. */
int tu_connect(uint16_t port);
/* recv(2) that retries EINTR (see tu_connect). */
ssize_t tu_recv(int fd, void *buf, size_t len, int flags);
/* Write all of buf; 0 or -1. */
int tu_send_all(int fd, const void *buf, size_t len);
/* Read one HTTP/1.x response (status line, headers, Content-Length or chunked body, or
 * until EOF when neither). Returns its status code and fills body (NUL-terminated, at most
 * cap-1 bytes, de-chunked) if body != NULL; *hdrs gets the header block if hdrs != NULL
 * (a buffer per thread, overwritten by its next call, NUL-terminated). Returns -1 on
 * EOF/timeout/garbage. Bytes read past the response are kept in a per-fd carry buffer for the next
 * call. */
int tu_read_response(int fd, char *body, size_t cap, const char **hdrs);
/* Forget any carried bytes for fd (call before closing it). */
void tu_forget(int fd);
/* 1 if the peer has closed (read returns 0 within ms milliseconds), 0 if not. */
int tu_wait_eof(int fd, int ms);
/* Monotonic milliseconds. */
uint64_t tu_now_ms(void);
/* A deterministic PRNG (xorshift64*) for the randomized suites: seed, then draw. */
void tu_srand(uint64_t seed);
uint64_t tu_rand(void);

#endif
