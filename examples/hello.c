/* The smallest ugate program: one route, graceful stop on SIGTERM/SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <ugate.h>

static ug_server *srv;

static ug_handler_result hello(ug_request *req, void *user) {
    (void)user;
    ug_resp_send(req, 200, "text/plain", "Hello from ugate\n", 17);
    return UG_DONE;
}

static void on_signal(int sig) {
    (void)sig;
    ug_server_shutdown(srv, NULL); /* async-signal-safe */
}

int main(int argc, char **argv) {
    ug_config cfg;
    ug_config_init(&cfg);
    cfg.port = argc > 1 ? (uint16_t)atoi(argv[1]) : 8080;
    if (ug_server_create(&srv, &cfg) < 0 ||
        ug_route(srv, "GET", "/", UG_ROUTE_EXACT, hello, NULL) < 0)
        return 1;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("listening on 127.0.0.1:%u\n", ug_server_port(srv));
    fflush(stdout);
    int rc = ug_server_run(srv, NULL); /* returns once every connection has drained */
    ug_server_free(srv);
    return rc == 0 ? 0 : 1;
}
