/* Routes (src/router.c): exact and prefix paths, registration order, methods (a GET route
 * answers HEAD, a route without a method answers any), path_hit for 405 against 404, and an
 * allocation failure that leaves the table as it was. */
#include "core.h"
#include "testutil.h"

#include <errno.h>
#include <string.h>

static ug_str S(const char *s) {
    return (ug_str){s, strlen(s)};
}

static ug_handler_result h1(ug_request *r, void *u) {
    (void)r, (void)u;
    return UG_DONE;
}
static ug_handler_result h2(ug_request *r, void *u) {
    (void)r, (void)u;
    return UG_DONE;
}

static const ug__route *find(const ug__router *rt, const char *m, const char *p, int *hit) {
    return ug__router_find(rt, S(m), S(p), hit);
}

static void test_exact_and_methods(void) {
    ug__router rt = {0};
    int hit = -1;
    CU_ASSERT_EQUAL(ug__router_add(&rt, "GET", "/a", 0, h1, NULL), 0);
    CU_ASSERT_EQUAL(ug__router_add(&rt, "POST", "/a", 0, h2, NULL), 0);
    const ug__route *r = find(&rt, "GET", "/a", &hit);
    CU_ASSERT(r && r->fn == h1 && hit == 1);
    r = find(&rt, "POST", "/a", &hit);
    CU_ASSERT(r && r->fn == h2 && hit == 1);
    r = find(&rt, "HEAD", "/a", &hit); /* answered by the GET route, body suppressed */
    CU_ASSERT(r && r->fn == h1 && hit == 1);
    r = find(&rt, "PUT", "/a", &hit); /* the path exists: 405, not 404 */
    CU_ASSERT(r == NULL && hit == 1);
    r = find(&rt, "GET", "/ab", &hit); /* exact paths compare their lengths too */
    CU_ASSERT(r == NULL && hit == 0);
    r = find(&rt, "GET", "/", &hit);
    CU_ASSERT(r == NULL && hit == 0);
    r = find(&rt, "get", "/a", &hit); /* methods are case-sensitive (RFC 9110 9.1) */
    CU_ASSERT(r == NULL && hit == 1);
    ug__router_free(&rt);
    CU_ASSERT_PTR_NULL(rt.v);
    CU_ASSERT_EQUAL(rt.n, 0);
}

static void test_head_only_from_get(void) {
    ug__router rt = {0};
    int hit;
    CU_ASSERT_EQUAL(ug__router_add(&rt, "POST", "/p", 0, h1, NULL), 0);
    CU_ASSERT(find(&rt, "HEAD", "/p", &hit) == NULL && hit == 1);
    CU_ASSERT_EQUAL(ug__router_add(&rt, "HEAD", "/p", 0, h2, NULL), 0);
    const ug__route *r = find(&rt, "HEAD", "/p", &hit);
    CU_ASSERT(r && r->fn == h2);
    ug__router_free(&rt);
}

static void test_prefix_and_order(void) {
    ug__router rt = {0};
    int hit;
    CU_ASSERT_EQUAL(ug__router_add(&rt, "GET", "/static/", UG_ROUTE_PREFIX, h1, NULL), 0);
    CU_ASSERT_EQUAL(ug__router_add(&rt, "GET", "/static/x", 0, h2, NULL), 0);
    CU_ASSERT_EQUAL(ug__router_add(&rt, NULL, "/any", 0, h2, NULL), 0);
    const ug__route *r = find(&rt, "GET", "/static/x", &hit); /* first registered wins */
    CU_ASSERT(r && r->fn == h1);
    r = find(&rt, "GET", "/static/", &hit);
    CU_ASSERT(r && r->fn == h1);
    r = find(&rt, "GET", "/static", &hit); /* shorter than the prefix */
    CU_ASSERT(r == NULL && hit == 0);
    r = find(&rt, "DELETE", "/any", &hit);
    CU_ASSERT(r && r->fn == h2 && hit == 1);
    r = find(&rt, "DELETE", "/static/a", &hit);
    CU_ASSERT(r == NULL && hit == 1);
    ug__router_free(&rt);
}

/* A route's path may contain bytes a C string comparison would stop at: find compares the
 * request's bytes, which carry their own length. */
static void test_embedded_nul_in_request(void) {
    ug__router rt = {0};
    int hit;
    CU_ASSERT_EQUAL(ug__router_add(&rt, "GET", "/a", 0, h1, NULL), 0);
    CU_ASSERT(ug__router_find(&rt, S("GET"), (ug_str){"/a\0b", 4}, &hit) == NULL && hit == 0);
    CU_ASSERT(ug__router_find(&rt, (ug_str){"GET\0", 4}, S("/a"), &hit) == NULL && hit == 1);
    ug__router_free(&rt);
}

static unsigned fail_after, allocs;
static int fail_nth(size_t n) {
    (void)n;
    return allocs++ == fail_after;
}

/* Each of the three allocations of an add fails in turn: -ENOMEM, the routes registered
 * before still match, nothing leaks (ASan's leak checker says so in the sanitizer build). */
static void test_alloc_failure(void) {
    for (fail_after = 0; fail_after < 3; fail_after++) {
        ug__router rt = {0};
        int hit;
        CU_ASSERT_EQUAL(ug__router_add(&rt, "GET", "/keep", 0, h1, NULL), 0);
        allocs = 0;
        ug__fault_alloc_hook = fail_nth;
        int rc = ug__router_add(&rt, "GET", "/new", 0, h2, NULL);
        ug__fault_alloc_hook = NULL;
        CU_ASSERT_EQUAL(rc, -ENOMEM);
        CU_ASSERT_EQUAL(rt.n, 1);
        CU_ASSERT(find(&rt, "GET", "/keep", &hit) != NULL);
        CU_ASSERT(find(&rt, "GET", "/new", &hit) == NULL);
        CU_ASSERT_EQUAL(ug__router_add(&rt, "GET", "/new", 0, h2, NULL), 0);
        CU_ASSERT(find(&rt, "GET", "/new", &hit) != NULL);
        ug__router_free(&rt);
    }
}

static void register_suites(void) {
    CU_pSuite s = CU_add_suite("router", NULL, NULL);
    CU_add_test(s, "exact paths and methods", test_exact_and_methods);
    CU_add_test(s, "HEAD only from a GET route", test_head_only_from_get);
    CU_add_test(s, "prefixes and registration order", test_prefix_and_order);
    CU_add_test(s, "request bytes with NUL", test_embedded_nul_in_request);
    CU_add_test(s, "allocation failure", test_alloc_failure);
}

int main(void) {
    return tu_main(register_suites, 60);
}
