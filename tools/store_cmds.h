/*
 * store_cmds.h - wcache push / pull / ls (tools/store_cmds.c), and the
 * store options other commands (sync --out) share with them.
 */
#ifndef WCACHE_TOOL_STORE_CMDS_H
#define WCACHE_TOOL_STORE_CMDS_H

#include <watchcache.h>

/* Run "wcache push|pull|ls ..." (argv[1] is the command); returns the exit
 * status. */
int store_main(int argc, char **argv);

/* 1 when argv[1] is a store command. */
int store_is_command(const char *cmd);

/* Store options from the command line's store flags (--endpoint URL,
 * --region R, --path-style, --virtual-style, --profile P, --part-size N,
 * --parallel N, --ca-file F, --insecure, --retries N); *i is moved past a
 * flag's value.  Returns 1 when argv[*i] was one of them, 0 when it was
 * not, -1 on a bad value (a message is printed).  Strings point into
 * argv.  Credentials are never flags: they come from the environment or
 * the shared credentials file, so that they stay out of `ps`. */
int store_flag(int argc, char **argv, int *i, wcache_store_opts *o);

/* Open url with o, a progress bar on stderr when it is a terminal. */
int store_open(const char *url, wcache_store_opts *o, wcache_store **st, char *eb, size_t el);

#endif
