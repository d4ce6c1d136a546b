/*
 * fuzz_proxy_config.c - libFuzzer target for wcache-proxy's configuration
 * reader (examples/proxy/config.c, on libyaml's document API) and its
 * token-file reader: any bytes are a clean error or a configuration,
 * never a crash, an overrun or a leak beyond what the configuration owns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../../examples/proxy/config.c"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

px_config G;

static void free_cfg(px_config *c)
{
    char **strs[] = {&c->file,         &c->listen,       &c->etcd,     &c->stream,
                     &c->snapshot_dir, &c->snapshot_url, &c->tls_cert, &c->tls_key,
                     &c->client_ca,    &c->token_file};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        free(*strs[i]);
    for (int i = 0; i < c->ntokens; i++) {
        free(c->tokens[i].token);
        free(c->tokens[i].user);
    }
    free(c->tokens);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cfg_err = fopen("/dev/null", "w"); /* the readers' messages, not libFuzzer's */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("conf", 0);
    if (fd < 0)
        return 0;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    px_config c;
    cfg_defaults(&c);
    if (cfg_load_yaml(&c, path) == 0) {
        /* every resource it accepted is complete */
        for (int i = 0; i < c.nres; i++)
            if (!c.res[i].name[0] || !c.res[i].kind[0] || !c.res[i].prefix[0])
                __builtin_trap();
    }
    free_cfg(&c);
    /* the same bytes as a token file */
    cfg_defaults(&c);
    c.token_file = strdup(path);
    if (cfg_load_tokens(&c) == 0 && c.ntokens == 0)
        __builtin_trap();
    free_cfg(&c);
    close(fd);
    return 0;
}
