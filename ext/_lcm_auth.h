/* Ledger authentication support: locate, inside one LedgerCloseMeta that the generated scanner
 * has just validated (with ctx->at_mode set, so ctx->at lists where every captured transaction
 * hash lies), the byte spans whose SHA-256 the ledger header commits to:
 *
 *   LedgerHeaderHistoryEntry.hash   = SHA-256(LedgerHeader XDR)               -> hdr..hdr_end
 *   header.scpValue.txSetHash       = V0: SHA-256(previousLedgerHash || each envelope XDR)
 *                                      V1/V2: SHA-256(GeneralizedTransactionSet XDR)
 *                                                                              -> txset..txset_end
 *   header.txSetResultHash          = SHA-256(TransactionResultSet XDR), i.e. the u32 count
 *                                      followed by every txProcessing[i].result pair
 *
 * Hand-written; included after _lcm_grammar.h.  Even though the value was validated, every
 * step re-checks its bounds: skip functions check against ctx->end, and fixed offsets are
 * compared with the span they lie in before use.  Returns 0, or -1 with ctx->err set.
 */
#ifndef RPCBACKFILL_LCM_AUTH_H
#define RPCBACKFILL_LCM_AUTH_H

typedef struct {
    uint32_t version;             /* LedgerCloseMeta arm: 0, 1 or 2 */
    const uint8_t *stored_hash;   /* LedgerHeaderHistoryEntry.hash */
    const uint8_t *prev_hash;     /* header.previousLedgerHash */
    const uint8_t *txset_hash;    /* header.scpValue.txSetHash */
    const uint8_t *result_hash;   /* header.txSetResultHash */
    const uint8_t *hdr;           /* LedgerHeader XDR */
    const uint8_t *hdr_end;
    const uint8_t *txset;         /* TransactionSet (V0) / GeneralizedTransactionSet XDR */
    const uint8_t *txset_end;
    uint32_t n_results;           /* TransactionResultPairs in txProcessing */
    size_t results_len;           /* bytes of the TransactionResultSet XDR (4 + pairs) */
} xs_auth;

/* offsets inside LedgerHeader: uint32 ledgerVersion; Hash previousLedgerHash; StellarValue
 * scpValue (starting with Hash txSetHash); Hash txSetResultHash; ... */
#define XS_HDR_OFF_PREV 4
#define XS_HDR_OFF_SCP 36

static int xs_auth_locate(xs_ctx *c, const uint8_t *lcm, xs_auth *a)
{
    const uint8_t *end = c->end;
    const uint8_t *q, *pair_end = NULL;
    size_t i, off, len = 4;
    uint32_t n = 0;

    memset(a, 0, sizeof(*a));
    if ((size_t)(end - lcm) < 4)
        return xs_fail(c, XS_E_TRUNC, lcm, -1), -1;
    a->version = xs_u32(lcm);
    if (a->version > 2 || c->slot[XS_SLOT_HEADER_HASH] == NULL || c->slot[XS_SLOT_PREV_HASH] == NULL)
        return xs_fail(c, XS_E_CAPTURE, lcm, -1), -1;
    a->stored_hash = c->slot[XS_SLOT_HEADER_HASH];
    a->hdr = a->stored_hash + 32;
    a->hdr_end = xs_skip_LedgerHeader(a->hdr, c, XS_MAX_DEPTH);
    if (a->hdr_end == NULL)
        return -1;
    /* the captured previousLedgerHash must be the one at its fixed offset in this header */
    if ((size_t)(a->hdr_end - a->hdr) < XS_HDR_OFF_SCP + 32 || c->slot[XS_SLOT_PREV_HASH] != a->hdr + XS_HDR_OFF_PREV)
        return xs_fail(c, XS_E_CAPTURE, a->hdr, -1), -1;
    a->prev_hash = a->hdr + XS_HDR_OFF_PREV;
    a->txset_hash = a->hdr + XS_HDR_OFF_SCP;
    a->result_hash = xs_skip_StellarValue(a->txset_hash, c, XS_MAX_DEPTH);
    if (a->result_hash == NULL)
        return -1;
    if ((size_t)(a->hdr_end - a->result_hash) < 32)
        return xs_fail(c, XS_E_TRUNC, a->result_hash, -1), -1;
    /* LedgerHeaderHistoryEntry.ext (a 4-byte void arm, validated by the scan), then the tx set */
    if ((size_t)(end - a->hdr_end) < 4)
        return xs_fail(c, XS_E_TRUNC, a->hdr_end, -1), -1;
    a->txset = a->hdr_end + 4;
    /* The tx set is followed by txProcessing's count, then its first element, which starts with
     * the first captured hash (V2: after the element's 4-byte ExtensionPoint).  When there is one,
     * that locates the end of the (already validated) tx set without walking it again. */
    off = a->version == 2 ? 8 : 4;
    if (c->n_at > 0 && c->at[0] >= a->txset && (size_t)(c->at[0] - a->txset) >= off) {
        a->txset_end = c->at[0] - off;
    } else {
        if (a->version == 0)
            a->txset_end = xs_skip_TransactionSet(a->txset, c, XS_MAX_DEPTH);
        else
            a->txset_end = xs_skip_GeneralizedTransactionSet(a->txset, c, XS_MAX_DEPTH);
        if (a->txset_end == NULL)
            return -1;
    }
    if (a->version == 0 && (size_t)(a->txset_end - a->txset) < 36)
        return xs_fail(c, XS_E_TRUNC, a->txset, -1), -1;
    /* result pairs: the captured hash positions in walk order are each outer pair's hash,
     * followed by the inner hash of a fee bump, which lies inside the outer pair */
    for (i = 0; i < c->n_at; i++) {
        q = c->at[i];
        if (pair_end != NULL && q < pair_end)
            continue;
        if (q < a->txset_end)
            return xs_fail(c, XS_E_CAPTURE, q, -1), -1;
        pair_end = xs_skip_TransactionResultPair(q, c, XS_MAX_DEPTH);
        if (pair_end == NULL)
            return -1;
        len += (size_t)(pair_end - q);
        if (n == UINT32_MAX)
            return xs_fail(c, XS_E_COUNT, q, -1), -1;
        n++;
    }
    a->n_results = n;
    a->results_len = len;
    return 0;
}

/* write the TransactionResultSet XDR (a->results_len bytes) to out */
static void xs_auth_results(xs_ctx *c, const xs_auth *a, uint8_t *out)
{
    const uint8_t *q, *pair_end = NULL;
    size_t i, k;
    uint32_t n = a->n_results;
    uint8_t *w = out + 4;

    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    for (i = 0; i < c->n_at; i++) {
        q = c->at[i];
        if (pair_end != NULL && q < pair_end)
            continue;
        pair_end = xs_skip_TransactionResultPair(q, c, XS_MAX_DEPTH);
        if (pair_end == NULL) /* cannot happen: xs_auth_locate walked the same pairs */
            return;
        k = (size_t)(pair_end - q);
        if ((size_t)(w - out) + k > a->results_len)
            return;
        memcpy(w, q, k);
        w += k;
    }
}

#endif /* RPCBACKFILL_LCM_AUTH_H */
