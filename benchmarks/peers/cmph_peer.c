/* Peer benchmark driver for libcmph (Debian: libcmph-dev), compiled by benchmarks/bench_recsplit.py.
 *
 * usage: cmph_peer KEYS_FILE N ALGO
 *   KEYS_FILE holds N binary 32-byte keys.  Builds an MPHF with ALGO (chd or bdz), then looks every
 *   key up once in file order.  Prints one JSON object: build and lookup CPU ns/key, packed bytes,
 *   peak RSS (KiB) and the size of the key buffer it had to load (bytes).
 */
#include <cmph.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s KEYS_FILE N chd|bdz\n", argv[0]);
        return 2;
    }
    size_t n = strtoull(argv[2], NULL, 10);
    CMPH_ALGO algo = strcmp(argv[3], "bdz") == 0 ? CMPH_BDZ : CMPH_CHD;
    char *buf = malloc(n * 32);
    char **keys = malloc(n * sizeof(char *));
    FILE *f = fopen(argv[1], "rb");
    if (!buf || !keys || !f || fread(buf, 32, n, f) != n) {
        fprintf(stderr, "cannot read %zu keys from %s\n", n, argv[1]);
        return 1;
    }
    fclose(f);
    for (size_t i = 0; i < n; i++) keys[i] = buf + 32 * i;
    double t0 = cpu_now();
    cmph_io_adapter_t *src = cmph_io_struct_vector_adapter(buf, 32, 0, 32, (cmph_uint32)n);
    cmph_config_t *cfg = cmph_config_new(src);
    cmph_config_set_algo(cfg, algo);
    cmph_t *h = cmph_new(cfg);
    cmph_config_destroy(cfg);
    double t1 = cpu_now();
    if (!h) {
        fprintf(stderr, "cmph build failed\n");
        return 1;
    }
    cmph_uint32 size = cmph_packed_size(h);
    void *packed = malloc(size);
    cmph_pack(h, packed);
    unsigned long long acc = 0;
    double t2 = cpu_now();
    for (size_t i = 0; i < n; i++) acc += cmph_search_packed(packed, keys[i], 32);
    double t3 = cpu_now();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"build_ns\": %.1f, \"lookup_ns\": %.1f, \"bytes\": %u, \"check\": %llu, \"maxrss_kib\": %ld, "
           "\"key_bytes\": %zu}\n",
           (t1 - t0) / n * 1e9, (t3 - t2) / n * 1e9, size, acc, ru.ru_maxrss, n * 32 + n * sizeof(char *));
    cmph_destroy(h);
    cmph_io_struct_vector_adapter_destroy(src);
    return 0;
}
