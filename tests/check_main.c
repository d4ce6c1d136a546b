/*
 * check_main.c - the one Check runner of a test binary.
 *
 * The suite list is not written here: make generates suites.inc from every
 * "Suite *NAME_suite(void)" defined in the binary's test files (check_*.c
 * for the black-box runner, wb_*.c for the white-box one), so adding a test
 * file never needs an edit here.
 *
 * Check itself honours CK_RUN_SUITE / CK_RUN_CASE (run one suite or case),
 * CK_FORK=no (for gdb and valgrind), CK_VERBOSITY, CK_DEFAULT_TIMEOUT,
 * CK_TIMEOUT_MULTIPLIER and CK_TAP_LOG_FILE_NAME.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#define WCACHE_SUITE(name) Suite *name##_suite(void);
#include "suites.inc"
#undef WCACHE_SUITE

typedef Suite *(*suite_fn)(void);

/* NULL-terminated so that a runner with no suite yet is still valid C. */
static const suite_fn suites[] = {
#define WCACHE_SUITE(name) name##_suite,
#include "suites.inc"
#undef WCACHE_SUITE
    NULL};

int main(void)
{
    SRunner *sr = srunner_create(NULL);
    for (size_t i = 0; suites[i] != NULL; i++)
        srunner_add_suite(sr, suites[i]());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    int run = srunner_ntests_run(sr);
    srunner_free(sr);
    /* Zero tests under a CK_RUN_SUITE filter usually means a misspelt name. */
    if (run == 0)
        fprintf(stderr, "check_main: no test ran%s\n",
                getenv("CK_RUN_SUITE") || getenv("CK_RUN_CASE")
                    ? " (check CK_RUN_SUITE / CK_RUN_CASE)"
                    : "");
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
