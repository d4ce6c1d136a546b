/* version.c - the runtime version, to catch a header/library mismatch. */
#include "watchcache.h"

unsigned wcache_version_number(void)
{
    return WCACHE_VERSION_NUMBER;
}

const char *wcache_version_string(void)
{
    return WCACHE_VERSION_STRING;
}
