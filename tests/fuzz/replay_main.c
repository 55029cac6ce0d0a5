/*
 * tests/fuzz/replay_main.c - runs a libFuzzer entry over saved inputs without libFuzzer, so
 * corpora and crash reproducers are regression tests under any compiler.
 * Usage: replay DIR_OR_FILE...   (directories: every regular file, in name order)
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf)
        return -1;
    /* exact-size copy: a harness reading past the input then trips ASan */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int select_all(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

int main(int argc, char **argv)
{
    long count = 0;
    int failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: no such file or directory: %s\n", argv[i]);
            failed = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) == 0)
                count++;
            else
                failed = 1;
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, select_all, alphasort);
        if (n < 0) {
            fprintf(stderr, "replay: cannot read directory %s\n", argv[i]);
            failed = 1;
            continue;
        }
        for (int k = 0; k < n; k++) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], names[k]->d_name);
            struct stat fs;
            if (stat(path, &fs) == 0 && S_ISREG(fs.st_mode)) {
                if (replay_file(path) == 0)
                    count++;
                else
                    failed = 1;
            }
            free(names[k]);
        }
        free(names);
    }
    printf("replayed %ld inputs\n", count);
    if (!count) {
        /* A corpus that went missing or empty would otherwise pass having tested nothing. */
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    return failed;
}
