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
 * read past the end.  The stand-alone mode is the small mutation fuzzer of fuzz_driver.h (shared
 * with recsplit_fuzz.c); it writes the input that killed it to CRASH_DIR/crash-<hash>.bin.
 * tests/test_lcm_fuzz.py builds the stand-alone mode and runs it for a bounded time.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "_lcm_grammar.h"
#include "_lcm_auth.h"
#include "_lcm_head.h"

/* bounded header parse (header_sequence): stays inside the buffer, and on a ledger the full
 * scan accepted it finds the same sequence (scan_seq 0 = the scan rejected the input) */
static void check_head(const uint8_t *buf, size_t size, int scanned, uint32_t scan_seq)
{
    xs_ctx c;
    uint32_t seq = 0;
    const uint8_t *q;
    xs_init(&c, buf, buf + size, NULL, 0);
    q = xs_head_seq(buf, &c, &seq);
    if (q) {
        if (q < buf + 4 || q > buf + size)
            abort();
    } else if (c.err == XS_OK) {
        abort(); /* failure without a reason */
    }
    if (scanned && (q == NULL || seq != scan_seq))
        abort(); /* the prefix parse disagrees with the full scan */
    xs_free(&c);
}

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
    {
        int scanned = q != NULL && c.slot_hits[XS_SLOT_SEQ] == 1;
        check_head(buf, size, scanned, scanned ? xs_u32(c.slot[XS_SLOT_SEQ]) : 0);
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
#ifdef XS_COVERAGE
#define FUZZ_COVERAGE
#endif
#define FUZZ_NAME "lcm_fuzz"
#include "fuzz_driver.h"
#endif
