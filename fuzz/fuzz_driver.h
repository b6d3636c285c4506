/* Stand-alone mutation fuzzing driver shared by the native fuzz harnesses (lcm_fuzz.c,
 * recsplit_fuzz.c), for machines without libFuzzer.  Before including it, a harness defines
 * FUZZ_NAME (a string used in its messages) and `static void check_one(const uint8_t *, size_t)`,
 * which must abort (or trip a sanitizer) on a bug.
 *
 *     ./harness SECONDS SEED CRASH_DIR seed_file...
 *
 * With FUZZ_COVERAGE (compile with gcc's -fsanitize-coverage=trace-pc) it is coverage-guided like
 * AFL: edge hit counts (bucketed) are collected while an input is checked, and inputs that reach a
 * new edge/bucket join the in-memory corpus that later mutations start from.  Mutations: bit flips,
 * interesting 4/8-byte values in either byte order at aligned offsets, truncation, deletion,
 * insertion, duplication, splicing two inputs.  The input that killed the process is written to
 * CRASH_DIR/crash-<hash>.bin from the sanitizer death callback.
 */
#ifndef RPCBACKFILL_FUZZ_DRIVER_H
#define RPCBACKFILL_FUZZ_DRIVER_H
#include <sanitizer/common_interface_defs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef FUZZ_COVERAGE
/* AFL-style edge coverage from gcc's -fsanitize-coverage=trace-pc callback */
#define COV_SIZE (1u << 16)
static uint8_t cov_map[COV_SIZE];   /* hit counts of the current input */
static uint8_t cov_virgin[COV_SIZE]; /* bucket bits ever seen */
static uintptr_t cov_prev;

__attribute__((no_sanitize_coverage)) void __sanitizer_cov_trace_pc(void)
{
    uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    uintptr_t loc = (pc ^ (pc >> 15)) & (COV_SIZE - 1);
    cov_map[loc ^ cov_prev]++;
    cov_prev = loc >> 1;
}

__attribute__((no_sanitize_coverage)) static uint8_t cov_bucket(uint8_t n)
{
    return n == 0 ? 0 : n == 1 ? 1 : n == 2 ? 2 : n == 3 ? 4 : n < 8 ? 8 : n < 16 ? 16 : n < 32 ? 32 : n < 128 ? 64 : 128;
}

/* 1 if the hit counts of the last input contain a bucket never seen before */
__attribute__((no_sanitize_coverage)) static int cov_new(void)
{
    int fresh = 0;
    for (uint32_t i = 0; i < COV_SIZE; i++) {
        if ((i & 7) == 0) { /* skip all-zero 8-byte words quickly */
            uint64_t w;
            memcpy(&w, cov_map + i, 8);
            if (!w) {
                i += 7;
                continue;
            }
        }
        if (cov_map[i]) {
            uint8_t b = cov_bucket(cov_map[i]);
            if (b & ~cov_virgin[i]) {
                cov_virgin[i] |= b;
                fresh = 1;
            }
            cov_map[i] = 0;
        }
    }
    return fresh;
}
#define COV_RESET() (memset(cov_map, 0, sizeof cov_map), cov_prev = 0)
#else
#define COV_RESET() ((void)0)
static int cov_new(void) { return 0; }
#endif

static uint8_t *cur;
static size_t cur_len;
static const char *crash_dir = ".";

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static void on_death(void)
{
    if (!cur)
        return;
    uint64_t h = 1469598103934665603ULL;
    char path[4096];
    for (size_t i = 0; i < cur_len; i++)
        h = (h ^ cur[i]) * 1099511628211ULL;
    snprintf(path, sizeof path, "%s/crash-%016llx.bin", crash_dir, (unsigned long long)h);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(cur, 1, cur_len, f);
        fclose(f);
        fprintf(stderr, FUZZ_NAME ": input saved to %s\n", path);
    }
}

typedef struct {
    uint8_t *data;
    size_t len;
} blob;

static blob read_file(const char *path)
{
    blob b = {NULL, 0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return b;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b.data = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
    b.len = n > 0 && fread(b.data, 1, (size_t)n, f) == (size_t)n ? (size_t)n : 0;
    fclose(f);
    return b;
}

static const uint32_t interesting[] = {0, 1, 2, 3, 4, 16, 32, 64, 255, 256, 1000, 0x7FFF, 0xFFFF,
                                       0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFF3};

/* mutate cur (capacity cap) in place; returns new length */
static size_t mutate(uint8_t *b, size_t len, size_t cap, const blob *corpus, int ncorpus)
{
    int rounds = 1 + (int)(rnd() % 4);
    for (int r = 0; r < rounds; r++) {
        size_t i = len ? (size_t)(rnd() % len) : 0;
        switch (rnd() % 7) {
        case 0: /* bit flip */
            if (len)
                b[i] ^= (uint8_t)(1u << (rnd() % 8));
            break;
        case 1: { /* interesting value, 4 or 8 bytes, either byte order, at an aligned offset */
            size_t w = rnd() % 2 ? 8 : 4;
            int be = (int)(rnd() % 2);
            i &= ~(w - 1);
            if (i + w <= len) {
                uint64_t v = interesting[rnd() % (sizeof interesting / sizeof interesting[0])];
                if (w == 8 && rnd() % 2)
                    v = ~v; /* 0xFFFF..., 0xFFFF...FFFE, ... */
                if (rnd() % 4 == 0) { /* nudge the value already there */
                    v = 0;
                    for (size_t k = 0; k < w; k++)
                        v |= (uint64_t)b[i + k] << (8 * (be ? w - 1 - k : k));
                    v += (uint64_t)(rnd() % 5) - 2u;
                }
                for (size_t k = 0; k < w; k++)
                    b[i + k] = (uint8_t)(v >> (8 * (be ? w - 1 - k : k)));
            }
            break;
        }
        case 2: /* truncate */
            len = i;
            break;
        case 3: { /* delete a chunk */
            size_t n = (size_t)(rnd() % 64) & ~(size_t)(rnd() % 2 ? 3 : 0);
            if (i + n > len)
                n = len - i;
            memmove(b + i, b + i + n, len - i - n);
            len -= n;
            break;
        }
        case 4: { /* insert random bytes */
            size_t n = 1 + (size_t)(rnd() % 16);
            if (len + n <= cap) {
                memmove(b + i + n, b + i, len - i);
                for (size_t k = 0; k < n; k++)
                    b[i + k] = (uint8_t)rnd();
                len += n;
            }
            break;
        }
        case 5: { /* duplicate a chunk (repeats structures, grows counts' payloads) */
            size_t n = 4 * (1 + (size_t)(rnd() % 32));
            if (i + n <= len && len + n <= cap) {
                memmove(b + i + n, b + i, len - i);
                len += n;
            }
            break;
        }
        default: { /* splice: tail of another corpus input */
            const blob *o = &corpus[rnd() % (uint64_t)ncorpus];
            if (o->len) {
                size_t j = (size_t)(rnd() % o->len);
                size_t n = o->len - j;
                if (i + n > cap)
                    n = cap - i;
                memcpy(b + i, o->data + j, n);
                len = i + n;
            }
            break;
        }
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s SECONDS SEED CRASH_DIR seed_file...\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[1]);
    rng_state = (uint64_t)strtoull(argv[2], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    crash_dir = argv[3];
    int ncorpus = argc - 4;
    int maxcorpus = ncorpus + 50000; /* inputs added for new coverage */
    blob *corpus = (blob *)calloc((size_t)maxcorpus, sizeof(blob));
    size_t maxlen = 0;
    for (int k = 0; k < ncorpus; k++) {
        corpus[k] = read_file(argv[4 + k]);
        if (corpus[k].len > maxlen)
            maxlen = corpus[k].len;
    }
    size_t cap = maxlen + 4096;
    cur = (uint8_t *)malloc(cap);
    __sanitizer_set_death_callback(on_death);

    /* every seed as is, then mutations until the time is up */
    for (int k = 0; k < ncorpus; k++) {
        memcpy(cur, corpus[k].data, corpus[k].len);
        cur_len = corpus[k].len;
        COV_RESET();
        check_one(cur, cur_len);
        cov_new();
    }
    int nseeds = ncorpus;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long long iters = 0;
    for (;;) {
        if ((iters & 63) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 >= seconds)
                break;
        }
        const blob *s = &corpus[rnd() % (uint64_t)ncorpus];
        memcpy(cur, s->data, s->len);
        cur_len = mutate(cur, s->len, cap, corpus, ncorpus);
        COV_RESET();
        check_one(cur, cur_len);
        if (cov_new() && ncorpus < maxcorpus) {
            corpus[ncorpus].data = (uint8_t *)malloc(cur_len ? cur_len : 1);
            memcpy(corpus[ncorpus].data, cur, cur_len);
            corpus[ncorpus].len = cur_len;
            ncorpus++;
        }
        iters++;
    }
    printf(FUZZ_NAME ": %llu mutated inputs, %d seeds, %d inputs kept for new coverage, no crash\n", iters, nseeds,
           ncorpus - nseeds);
    fflush(stdout);
    for (int k = 0; k < ncorpus; k++)
        free(corpus[k].data);
    free(corpus);
    free(cur);
    cur = NULL;
    cur_len = 0;
    return 0;
}

#endif
