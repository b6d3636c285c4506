/* Native fuzz harness for the RecSplit index reader (ext/recsplit_core.h): rs_index_open on an
 * arbitrary file image, then single and batched lookups of fixed keys.
 *
 *   libFuzzer (clang):  clang -g -O1 -fsanitize=fuzzer,address,undefined -Iext -Ifuzz \
 *                           fuzz/recsplit_fuzz.c -o recsplit_fuzz -lm
 *                       ./recsplit_fuzz -max_len=65536 -max_total_time=600 corpus_dir/ seed_dir/
 *   stand-alone (gcc):  gcc -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
 *                           -fsanitize-coverage=trace-pc -DRS_STANDALONE -DFUZZ_COVERAGE \
 *                           -Iext -Ifuzz fuzz/recsplit_fuzz.c -o recsplit_fuzz -lm
 *                       ./recsplit_fuzz SECONDS SEED CRASH_DIR seed_file...
 *
 * Seeds are real index files built from the keys fuzz_key(0..n-1) (fuzz/recsplit_seeds.py), so
 * the looked-up keys walk real bucket trees before the mutations break them.  The CRC is not
 * checked here: the harness plays a file that is damaged yet carries a matching checksum (or one
 * opened with checksum="off"), where only the structural checks and bounded reads stand between
 * the bytes and the process.  Every input is copied into a heap block of exactly its size (8-byte
 * aligned, like a mapping), so AddressSanitizer reports any read past it.  Properties:
 *   - rs_index_open either succeeds or gives a reason;
 *   - lookups never read outside the block (ASan) nor hang (the walk is bounded; libFuzzer's
 *     -timeout / the driver's clock catch a loop);
 *   - the batched and the single lookup agree key by key, including on which keys met damage.
 * tests/test_recsplit_fuzz.py runs a bounded session and replays tests/regressions/recsplit/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recsplit_core.h"

#define FUZZ_KEYS 160 /* looked-up keys: fuzz_key(0..FUZZ_KEYS-1) */

/* the i-th key of the seed files: four SplitMix64 words, little-endian (fuzz/recsplit_seeds.py
 * computes the same) */
static void fuzz_key(uint64_t i, uint8_t out[32])
{
    uint64_t s = 0x6b65797300000000ULL ^ i;
    for (int k = 0; k < 4; k++) {
        uint64_t w = rs_splitmix(&s);
        for (int b = 0; b < 8; b++)
            out[8 * k + b] = (uint8_t)(w >> (8 * b));
    }
}

static uint8_t keys[FUZZ_KEYS * 32];

static void setup_once(void)
{
    static int done = 0;
    if (done)
        return;
    rs_init_tables();
    rs_detect_simd();
    for (uint64_t i = 0; i < FUZZ_KEYS; i++)
        fuzz_key(i, keys + 32 * i);
    done = 1;
}

static void check_one(const uint8_t *data, size_t size)
{
    setup_once();
    uint8_t *buf = (uint8_t *)malloc(size ? size : 1); /* malloc: 16-byte aligned */
    if (!buf)
        abort();
    memcpy(buf, data, size);
    rs_index ix;
    char err[256];
    int rc = rs_index_open(&ix, buf, size, err, sizeof err);
    if (rc != RS_OPEN_OK) {
        if (err[0] == 0 || (rc != RS_OPEN_CORRUPT && rc != RS_OPEN_UNSUPPORTED))
            abort(); /* refused without a reason */
        free(buf);
        return;
    }
    uint32_t out[FUZZ_KEYS];
    uint64_t bad = rs_lookup_batch(&ix, keys, FUZZ_KEYS, out, ix.range_start);
    uint64_t bad1 = 0;
    for (int i = 0; i < FUZZ_KEYS; i++) {
        int64_t v = rs_lookup(&ix, keys + 32 * i);
        if (v == RS_LOOKUP_DAMAGED) {
            bad1++;
            if (out[i] != 0)
                abort();
        } else if (v == RS_LOOKUP_ABSENT) {
            if (out[i] != 0)
                abort();
        } else if (v < 0 || v > 0xffffff || out[i] != (uint32_t)(ix.range_start + (uint32_t)v)) {
            abort();
        }
    }
    if (bad != bad1)
        abort();
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_one(data, size);
    return 0;
}

#ifdef RS_STANDALONE
#define FUZZ_NAME "recsplit_fuzz"
#include "fuzz_driver.h"
#endif
