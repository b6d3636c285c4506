/* Bounded prefix parse of a LedgerCloseMeta: the header's ledgerSeq without scanning the rest.
 *
 * Hand-written on top of the generated grammar (ext/_lcm_grammar.h); same safety model: every
 * read is preceded by XS_NEED, the variable-length parts before the sequence
 * (LedgerCloseMetaExt of V1/V2, StellarValue with its upgrades and optional signature) are
 * skipped by the grammar's own bounds-checked skip functions.  Only the prefix up to ledgerSeq
 * is validated: callers that need the whole value validated use the full scan.  The LFS verify
 * pass uses it on frames whose zstd content checksum already proved the bytes are the ones
 * ingested (and fully scanned) earlier.
 *
 *   LedgerCloseMeta   = int32 v; v0: LedgerCloseMetaV0 | v1, v2: LedgerCloseMetaExt ext, ...
 *   LedgerCloseMetaVx = ..., LedgerHeaderHistoryEntry { Hash hash; LedgerHeader header; ... }
 *   LedgerHeader      = uint32 ledgerVersion; Hash previousLedgerHash; StellarValue scpValue;
 *                       Hash txSetResultHash; Hash bucketListHash; uint32 ledgerSeq; ...
 */
#ifndef RPCBACKFILL_LCM_HEAD_H
#define RPCBACKFILL_LCM_HEAD_H

#include "_lcm_grammar.h"

/* Parse the prefix at p (c->end bounds it); store ledgerSeq in *seq and return the position
 * right after it, or NULL with the reason in c. */
static const uint8_t *xs_head_seq(const uint8_t *p, xs_ctx *c, uint32_t *seq)
{
    const uint8_t *const end = c->end;
    const int xs_tid = 122; /* LedgerCloseMeta */
    int32_t v;
    XS_NEED(4);
    v = (int32_t)xs_u32(p);
    p += 4;
    if (v == 1 || v == 2) {
        p = xs_skip_LedgerCloseMetaExt(p, c, XS_MAX_DEPTH);
        if (XS_UNLIKELY(p == NULL))
            return NULL;
    } else if (v != 0) {
        return xs_fail(c, XS_E_ARM, p - 4, xs_tid);
    }
    XS_NEED(32 + 4 + 32); /* hash, ledgerVersion, previousLedgerHash */
    p += 32 + 4 + 32;
    p = xs_skip_StellarValue(p, c, XS_MAX_DEPTH);
    if (XS_UNLIKELY(p == NULL))
        return NULL;
    XS_NEED(32 + 32 + 4); /* txSetResultHash, bucketListHash, ledgerSeq */
    *seq = xs_u32(p + 64);
    return p + 68;
}

#endif
