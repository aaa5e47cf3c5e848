/* Routes: registered before the run, tried in registration order, first match wins. */
#include "core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int ug__router_add(ug__router *rt, const char *method, const char *path, unsigned flags,
                   ug_handler_fn fn, void *user) {
    ug__route *v = ug__realloc(rt->v, (rt->n + 1) * sizeof *v);
    if (!v) return -ENOMEM;
    rt->v = v;
    ug__route *r = &v[rt->n];
    memset(r, 0, sizeof *r);
    r->method = method ? ug__strdup(method) : NULL;
    r->path = ug__strdup(path);
    if ((method && !r->method) || !r->path) {
        free(r->method);
        free(r->path);
        return -ENOMEM;
    }
    r->method_len = method ? strlen(method) : 0;
    r->path_len = strlen(path);
    r->flags = flags;
    r->fn = fn;
    r->user = user;
    rt->n++;
    return 0;
}

ug__route *ug__router_get(ug__router *rt, const char *method, const char *path) {
    for (size_t i = 0; i < rt->n; i++) {
        ug__route *r = &rt->v[i];
        if (strcmp(r->path, path)) continue;
        if (method ? r->method && !strcmp(r->method, method) : !r->method) return r;
    }
    return NULL;
}

static int str_is(ug_str s, const char *lit, size_t n) {
    return s.len == n && !memcmp(s.ptr, lit, n);
}

const ug__route *ug__router_find(const ug__router *rt, ug_str method, ug_str path, int *path_hit) {
    *path_hit = 0;
    for (size_t i = 0; i < rt->n; i++) {
        const ug__route *r = &rt->v[i];
        if (r->flags & UG_ROUTE_PREFIX) {
            if (path.len < r->path_len || memcmp(path.ptr, r->path, r->path_len)) continue;
        } else if (!str_is(path, r->path, r->path_len)) {
            continue;
        }
        *path_hit = 1;
        if (!r->method || str_is(method, r->method, r->method_len)) return r;
        /* A GET route answers HEAD (the body is suppressed). */
        if (str_is(method, "HEAD", sizeof("HEAD") - 1) && !strcmp(r->method, "GET")) return r;
    }
    return NULL;
}

void ug__router_free(ug__router *rt) {
    for (size_t i = 0; i < rt->n; i++) {
        free(rt->v[i].method);
        free(rt->v[i].path);
        free(rt->v[i].mw);
    }
    free(rt->v);
    rt->v = NULL;
    rt->n = 0;
}
