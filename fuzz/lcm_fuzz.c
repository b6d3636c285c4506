/* Native fuzz driver for the generated LedgerCloseMeta scanner (ext/_lcm_grammar.h).
 *
 * Two ways to build it:
 *
 *   libFuzzer (clang):  clang -g -O1 -fsanitize=fuzzer,address,undefined -Iext fuzz/lcm_fuzz.c -o lcm_fuzz
 *                       ./lcm_fuzz -max_total_time=600 corpus_dir/
 *   stand-alone (gcc):  gcc -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
 *                           -fsanitize-coverage=trace-pc -DXS_STANDALONE -DXS_COVERAGE \
 *                           -Iext fuzz/lcm_fuzz.c -o lcm_fuzz
 *                       ./lcm_fuzz SECONDS SEED CRASH_DIR seed_file...
 *
 * With XS_COVERAGE (needs -fsanitize-coverage=trace-pc) the stand-alone mode is coverage-guided
 * like AFL: edge hit counts (bucketed) are collected while an input is checked, and inputs that
 * reach a new edge/bucket join the in-memory corpus that later mutations start from.
 *
 * Every input is copied into a heap block of exactly its size, so AddressSanitizer reports any
 * read past the end.  The stand-alone mode is a small mutation fuzzer (bit flips, interesting
 * 32-bit values at aligned offsets, truncation, deletion, insertion, splicing two inputs); it
 * writes the input that killed it to CRASH_DIR/crash-<hash>.bin from the sanitizer death callback.
 * tests/test_lcm_fuzz.py builds the stand-alone mode and runs it for a bounded time.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "_lcm_grammar.h"
#include "_lcm_auth.h"

/* ledger authentication spans (ledger_auth / auth_spans): scan recording hash positions, then
 * locate the header / tx-set / result spans and copy the result set out */
static void check_auth(const uint8_t *buf, size_t size)
{
    xs_ctx c;
    xs_auth a;
    const uint8_t *q;
    xs_init(&c, buf, buf + size, NULL, 0);
    c.at_mode = 1;
    q = xs_scan_LedgerCloseMeta(buf, &c, XS_MAX_DEPTH);
    if (q && c.slot_hits[XS_SLOT_HEADER_HASH] == 1 && c.slot_hits[XS_SLOT_PREV_HASH] == 1) {
        if (xs_auth_locate(&c, buf, &a) == 0) {
            const uint8_t *lo = buf, *hi = buf + size;
            if (a.hdr < lo || a.hdr_end > hi || a.hdr > a.hdr_end || a.txset < a.hdr_end || a.txset_end > hi ||
                a.txset > a.txset_end || a.result_hash + 32 > a.hdr_end || a.results_len < 4)
                abort();
            uint8_t *out = (uint8_t *)malloc(a.results_len);
            if (!out)
                abort();
            xs_auth_results(&c, &a, out);
            free(out);
        } else if (c.err == XS_OK) {
            abort();
        }
    }
    xs_free(&c);
}

static void check_one(const uint8_t *data, size_t size)
{
    uint8_t *buf = (uint8_t *)malloc(size ? size : 1);
    uint8_t stackbuf[32 * 4];
    xs_ctx c;
    const uint8_t *q;
    if (!buf)
        abort();
    memcpy(buf, data, size);

    /* whole-ledger scan with captures, as tx_hashes does */
    xs_init(&c, buf, buf + size, stackbuf, 4);
    q = xs_scan_LedgerCloseMeta(buf, &c, XS_MAX_DEPTH);
    if (q) {
        if (q < buf || q > buf + size)
            abort();
        for (int k = 0; k < XS_NSLOTS; k++)
            if (c.slot_hits[k] == 1 && (c.slot[k] < buf || c.slot[k] + 4 > buf + size))
                abort();
        /* the plain skip must agree with the scan */
        xs_ctx c2;
        xs_init(&c2, buf, buf + size, NULL, 0);
        if (xs_skip_LedgerCloseMeta(buf, &c2, XS_MAX_DEPTH) != q)
            abort();
    } else if (c.err == XS_OK) {
        abort(); /* failure without a reason */
    }
    xs_free(&c);
    check_auth(buf, size);

    /* one more grammar type chosen by the last byte, skipped from offset 0 */
    if (size) {
        int t = buf[size - 1] % XS_NUM_TYPES;
        if (xs_skip_table[t]) {
            xs_init(&c, buf, buf + size, NULL, 0);
            q = xs_skip_table[t](buf, &c, XS_MAX_DEPTH);
            if (q && (q < buf || q > buf + size))
                abort();
        }
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_one(data, size);
    return 0;
}

#ifdef XS_STANDALONE
#include <sanitizer/common_interface_defs.h>

#ifdef XS_COVERAGE
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
        fprintf(stderr, "lcm_fuzz: input saved to %s\n", path);
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
        case 1: /* interesting 32-bit big-endian value at an aligned offset */
            i &= ~(size_t)3;
            if (i + 4 <= len) {
                uint32_t v = interesting[rnd() % (sizeof interesting / sizeof interesting[0])];
                if (rnd() % 4 == 0)
                    v = ((uint32_t)b[i] << 24 | (uint32_t)b[i + 1] << 16 | (uint32_t)b[i + 2] << 8 | b[i + 3]) +
                        (uint32_t)(rnd() % 5) - 2u;
                b[i] = (uint8_t)(v >> 24);
                b[i + 1] = (uint8_t)(v >> 16);
                b[i + 2] = (uint8_t)(v >> 8);
                b[i + 3] = (uint8_t)v;
            }
            break;
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
    printf("lcm_fuzz: %llu mutated inputs, %d seeds, %d inputs kept for new coverage, no crash\n", iters, nseeds,
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
