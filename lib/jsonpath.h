/*
 * jsonpath.h - the JSON path scanner of the built-in index extractor.
 */
#ifndef WCI_JSONPATH_H
#define WCI_JSONPATH_H

#include <stdbool.h>
#include <stddef.h>

#define WCI_JP_JANSSON (-2)

/* The string member of json[0..len) at path[0..npath) (NUL-terminated
 * member names): 1 with *out (pointing into json) and *olen; 0 when there
 * is none or the text is not JSON; WCI_JP_JANSSON when only a full parse
 * can tell.  Never allocates. */
int wci_jsonpath_scan(char *const *path, size_t npath, const char *json, size_t len,
                      const void **out, size_t *olen);

#endif
