# cython: language_level=3
"""Native map of one LedgerCloseMeta for the read path (``stellar-rpc serve``).

Walks the top-level structure of a LedgerCloseMeta (V0, V1, V2) and returns byte offsets of
the pieces the JSON-RPC methods hand out -- the header entry, every transaction envelope of
the tx set (and the signed transaction body inside it, which is what a transaction hash
covers), and for every ``txProcessing`` entry its result pair, result, fee changes, meta and
(V2) post-apply fee changes -- without building any per-field Python object.  The value is
first validated as a whole with the generated grammar (ext/_lcm_grammar.h, shared with
ext/_lcm.pyx); every later read is bounds-checked again.  The GIL is released while walking.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp

from rpcbackfill.errors import XdrError


include "_xs_grammar.pxi"


cdef dict _IDS = {xs_type_names[i].decode(): i for i in range(XS_NUM_TYPES)}

cdef int T_LCM_EXT = _IDS["LedgerCloseMetaExt"]
cdef int T_LHHE = _IDS["LedgerHeaderHistoryEntry"]
cdef int T_STELLAR_VALUE = _IDS["StellarValue"]
cdef int T_ENV = _IDS["TransactionEnvelope"]
cdef int T_TX_V0 = _IDS["TransactionV0"]
cdef int T_TX = _IDS["Transaction"]
cdef int T_FEE_BUMP = _IDS["FeeBumpTransaction"]
cdef int T_MUXED = _IDS["MuxedAccount"]
cdef int T_RESULT = _IDS["TransactionResult"]
cdef int T_CHANGES = _IDS["LedgerEntryChanges"]
cdef int T_META = _IDS["TransactionMeta"]
cdef int T_EXT_POINT = _IDS["ExtensionPoint"]
cdef int T_TXSET = _IDS["TransactionSet"]
cdef int T_GTXSET = _IDS["GeneralizedTransactionSet"]
cdef int T_UPGRADE_META = _IDS["UpgradeEntryMeta"]
cdef int T_SCP_ENTRY = _IDS["SCPHistoryEntry"]
cdef int T_LEDGER_KEY = _IDS["LedgerKey"]
cdef int T_LEDGER_ENTRY = _IDS["LedgerEntry"]

# Fields of one envelope record (int64 each).
DEF ENV_FIELDS = 7      # start, end, envelope type, tx start, tx end, inner tx start, inner tx end
# Fields of one txProcessing record.
DEF TX_FIELDS = 11      # start, end, result start, result end, fee start, fee end, meta start,
                        # meta end, post start, post end, result code
cdef enum:
    ENV_TYPE_TX_V0 = 0
    ENV_TYPE_TX = 2
    ENV_TYPE_TX_FEE_BUMP = 5

cdef struct walk_t:
    int64_t *env
    size_t n_env
    size_t cap_env
    int64_t *tx
    size_t n_tx
    size_t cap_tx
    int version
    uint32_t protocol
    uint32_t seq
    uint64_t close_time
    int64_t header_start
    int64_t header_end
    int err  # 0 ok, 1 malformed (ctx has details), 2 out of memory, 3 structure
    const uint8_t *want  # 32-byte hash to look for (outer or fee-bump inner), or NULL
    Py_ssize_t found  # apply index of ``want``, -1 if absent


cdef inline const uint8_t *skip(int t, const uint8_t *p, xs_ctx *c) noexcept nogil:
    cdef xs_skip_fn fn = xs_skip_table[t]
    if p == NULL:
        return NULL
    if fn != NULL:
        return fn(p, c, XS_MAX_DEPTH)
    if <size_t>(c.end - p) < <size_t>xs_const_size[t]:
        return xs_fail(c, XS_E_TRUNC, p, t)
    return p + xs_const_size[t]


cdef inline const uint8_t *u32_at(const uint8_t *p, xs_ctx *c, uint32_t *out) noexcept nogil:
    if p == NULL:
        return NULL
    if c.end - p < 4:
        return xs_fail(c, XS_E_TRUNC, p, -1)
    out[0] = xs_u32(p)
    return p + 4


cdef int grow(int64_t **arr, size_t *cap, size_t need, size_t width) noexcept nogil:
    cdef size_t n
    cdef int64_t *q
    if need <= cap[0]:
        return 0
    n = cap[0] * 2 if cap[0] else 512
    while n < need:
        n *= 2
    q = <int64_t *>realloc(arr[0], n * width * sizeof(int64_t))
    if q == NULL:
        return -1
    arr[0] = q
    cap[0] = n
    return 0


cdef const uint8_t *envelope(const uint8_t *p, xs_ctx *c, walk_t *w) noexcept nogil:
    """One TransactionEnvelope at p: record its offsets."""
    cdef const uint8_t *base = c.start
    cdef const uint8_t *end
    cdef const uint8_t *q
    cdef const uint8_t *r
    cdef const uint8_t *q2
    cdef const uint8_t *q3
    cdef uint32_t kind = 0, inner_kind = 0
    cdef int64_t *e
    end = skip(T_ENV, p, c)
    if end == NULL:
        return NULL
    if u32_at(p, c, &kind) == NULL:
        return NULL
    if grow(&w.env, &w.cap_env, w.n_env + 1, ENV_FIELDS) < 0:
        w.err = 2
        return NULL
    e = w.env + w.n_env * ENV_FIELDS
    e[0] = p - base
    e[1] = end - base
    e[2] = kind
    e[5] = -1
    e[6] = -1
    q = p + 4
    if kind == ENV_TYPE_TX_V0:
        r = skip(T_TX_V0, q, c)
    elif kind == ENV_TYPE_TX:
        r = skip(T_TX, q, c)
    elif kind == ENV_TYPE_TX_FEE_BUMP:
        r = skip(T_FEE_BUMP, q, c)
        # FeeBumpTransaction: MuxedAccount feeSource; int64 fee; innerTx (type, TransactionV1Envelope)
        q2 = skip(T_MUXED, q, c)
        if q2 == NULL or r == NULL or r - q2 < 12:
            w.err = 3
            return NULL
        inner_kind = xs_u32(q2 + 8)
        if inner_kind != ENV_TYPE_TX:
            w.err = 3
            return NULL
        e[5] = (q2 + 12) - base
        q3 = skip(T_TX, q2 + 12, c)
        if q3 == NULL or q3 > r:
            w.err = 3
            return NULL
        e[6] = q3 - base
    else:
        w.err = 3
        return NULL
    if r == NULL or r > end:
        if r != NULL:
            w.err = 3
        return NULL
    e[3] = q - base
    e[4] = r - base
    w.n_env += 1
    return end


cdef const uint8_t *envelopes(const uint8_t *p, xs_ctx *c, walk_t *w) noexcept nogil:
    """TransactionEnvelope txs<>."""
    cdef uint32_t n = 0, i
    p = u32_at(p, c, &n)
    i = 0
    while p != NULL and i < n:
        p = envelope(p, c, w)
        i += 1
    return p


cdef const uint8_t *opt_base_fee(const uint8_t *p, xs_ctx *c) noexcept nogil:
    cdef uint32_t flag = 0
    p = u32_at(p, c, &flag)
    if p != NULL and flag == 1:
        if c.end - p < 8:
            return xs_fail(c, XS_E_TRUNC, p, -1)
        p += 8
    return p


cdef const uint8_t *generalized_tx_set(const uint8_t *p, xs_ctx *c, walk_t *w) noexcept nogil:
    cdef uint32_t v = 0, nphases = 0, ph = 0, kind = 0, ncomp = 0, nstages = 0, nclusters = 0
    cdef uint32_t i, j, k
    p = u32_at(p, c, &v)
    if p == NULL:
        return NULL
    if v != 1:
        w.err = 3
        return NULL
    if c.end - p < 32:
        return xs_fail(c, XS_E_TRUNC, p, -1)
    p += 32  # previousLedgerHash
    p = u32_at(p, c, &nphases)
    ph = 0
    while p != NULL and ph < nphases:
        p = u32_at(p, c, &kind)
        if p == NULL:
            return NULL
        if kind == 0:  # TxSetComponent v0Components<>
            p = u32_at(p, c, &ncomp)
            i = 0
            while p != NULL and i < ncomp:
                p = u32_at(p, c, &kind)  # TXSET_COMP_TXS_MAYBE_DISCOUNTED_FEE
                if p == NULL:
                    return NULL
                if kind != 0:
                    w.err = 3
                    return NULL
                p = opt_base_fee(p, c)
                p = envelopes(p, c, w)
                i += 1
        elif kind == 1:  # ParallelTxsComponent: baseFee, stages<> of clusters<> of envelopes<>
            p = opt_base_fee(p, c)
            p = u32_at(p, c, &nstages)
            i = 0
            while p != NULL and i < nstages:
                p = u32_at(p, c, &nclusters)
                j = 0
                while p != NULL and j < nclusters:
                    p = envelopes(p, c, w)
                    j += 1
                i += 1
        else:
            w.err = 3
            return NULL
        ph += 1
    return p


cdef const uint8_t *processing(const uint8_t *p, xs_ctx *c, walk_t *w) noexcept nogil:
    """TransactionResultMeta(V1) txProcessing<>."""
    cdef const uint8_t *base = c.start
    cdef uint32_t n = 0, i = 0
    cdef int64_t *t
    cdef const uint8_t *s
    p = u32_at(p, c, &n)
    while p != NULL and i < n:
        if grow(&w.tx, &w.cap_tx, w.n_tx + 1, TX_FIELDS) < 0:
            w.err = 2
            return NULL
        t = w.tx + w.n_tx * TX_FIELDS
        t[0] = p - base
        if w.version == 2:
            p = skip(T_EXT_POINT, p, c)
            if p == NULL:
                return NULL
        s = p  # TransactionResultPair: Hash transactionHash; TransactionResult result
        if c.end - s < 32 + 12:
            return xs_fail(c, XS_E_TRUNC, s, -1)
        t[2] = (s + 32) - base
        t[10] = <int32_t>xs_u32(s + 40)
        if w.want != NULL and w.found < 0:
            if memcmp(s, w.want, 32) == 0:
                w.found = w.n_tx
            elif (t[10] == 1 or t[10] == -13) and c.end - s >= 76 and memcmp(s + 44, w.want, 32) == 0:
                w.found = w.n_tx
        p = skip(T_RESULT, s + 32, c)
        if p == NULL:
            return NULL
        t[3] = p - base
        t[4] = p - base
        p = skip(T_CHANGES, p, c)
        if p == NULL:
            return NULL
        t[5] = p - base
        t[6] = p - base
        p = skip(T_META, p, c)
        if p == NULL:
            return NULL
        t[7] = p - base
        t[8] = p - base
        if w.version == 2:
            p = skip(T_CHANGES, p, c)
            if p == NULL:
                return NULL
        t[9] = p - base
        t[1] = p - base
        w.n_tx += 1
        i += 1
    return p


cdef const uint8_t *skip_array(int t, const uint8_t *p, xs_ctx *c) noexcept nogil:
    """T x<>: count, then each element (validated)."""
    cdef uint32_t n = 0, i = 0
    p = u32_at(p, c, &n)
    while p != NULL and i < n:
        p = skip(t, p, c)
        i += 1
    return p


cdef int walk(const uint8_t *start, const uint8_t *end, xs_ctx *c, walk_t *w) noexcept nogil:
    """One pass over the whole value: every byte is either walked here or validated by a
    generated skip function; nothing may follow the value."""
    cdef const uint8_t *p = start
    cdef const uint8_t *q
    cdef const uint8_t *q2
    cdef uint32_t v = 0
    p = u32_at(p, c, &v)
    if p == NULL or v > 2:
        w.err = 1 if p == NULL else 3
        return -1
    w.version = v
    if v >= 1:
        p = skip(T_LCM_EXT, p, c)
    if p == NULL:
        w.err = 1
        return -1
    w.header_start = p - start
    q = skip(T_LHHE, p, c)
    if q == NULL or q - p < 32 + 4 + 32 + 32 + 8:
        w.err = 1 if q == NULL else 3
        return -1
    w.header_end = q - start
    # LedgerHeaderHistoryEntry: hash; LedgerHeader { ledgerVersion; previousLedgerHash;
    # StellarValue scpValue { txSetHash; closeTime; ... }; txSetResultHash; bucketListHash; ledgerSeq; ...}
    w.protocol = xs_u32(p + 32)
    w.close_time = (<uint64_t>xs_u32(p + 100) << 32) | xs_u32(p + 104)
    q2 = skip(T_STELLAR_VALUE, p + 68, c)
    if q2 == NULL or q - q2 < 68:
        w.err = 1 if q2 == NULL else 3
        return -1
    w.seq = xs_u32(q2 + 64)
    p = q
    # the tx set: validated by the grammar first, then walked for the envelopes
    q = skip(T_TXSET if v == 0 else T_GTXSET, p, c)
    if q == NULL:
        w.err = 1
        return -1
    if v == 0:  # TransactionSet { previousLedgerHash; txs<> }
        p = envelopes(p + 32, c, w)
    else:
        p = generalized_tx_set(p, c, w)
    if p == NULL or p != q:
        if w.err == 0:
            w.err = 1 if p == NULL else 3
        return -1
    p = processing(p, c, w)
    p = skip_array(T_UPGRADE_META, p, c)
    p = skip_array(T_SCP_ENTRY, p, c)
    if p != NULL and v >= 1:
        if end - p < 8:
            xs_fail(c, XS_E_TRUNC, p, -1)
            p = NULL
        else:
            p = skip_array(T_LEDGER_KEY, p + 8, c)  # totalByteSizeOfLiveSorobanState; evictedKeys
            if v == 1:
                p = skip_array(T_LEDGER_ENTRY, p, c)  # unused
    if p == NULL:
        if w.err == 0:
            w.err = 1
        return -1
    if p != end:
        xs_fail(c, XS_E_TRAIL, p, -1)
        w.err = 1
        return -1
    return 0


include "_xs_error.pxi"


cdef const uint8_t *envelope_fee_source(const uint8_t *base, const int64_t *e, const uint8_t *end) noexcept nogil:
    """The 32-byte ed25519 key of the account an envelope charges the fee to, or NULL."""
    cdef const uint8_t *t = base + e[3]
    cdef uint32_t kind = <uint32_t>e[2], mt
    if kind == ENV_TYPE_TX_V0:  # TransactionV0: sourceAccountEd25519 first
        return t if end - t >= 32 else NULL
    if end - t < 4:
        return NULL
    mt = xs_u32(t)  # Transaction.sourceAccount / FeeBumpTransaction.feeSource: MuxedAccount
    if mt == 0:  # KEY_TYPE_ED25519
        return t + 4 if end - t >= 36 else NULL
    if mt == 0x100:  # KEY_TYPE_MUXED_ED25519: uint64 id, then the key
        return t + 12 if end - t >= 44 else NULL
    return NULL


cdef const uint8_t *fee_change_account(const uint8_t *base, const int64_t *t, const uint8_t *end) noexcept nogil:
    """Account of the first fee-processing change (LedgerEntry of an ACCOUNT, ed25519 key), or NULL."""
    cdef const uint8_t *p = base + t[4]
    cdef const uint8_t *q = base + t[5]
    cdef uint32_t ctype
    if q > end or q - p < 52 or xs_u32(p) == 0:
        return NULL
    ctype = xs_u32(p + 4)  # LEDGER_ENTRY_CREATED 0 / UPDATED 1 / STATE 3 carry a LedgerEntry
    if ctype != 0 and ctype != 1 and ctype != 3:
        return NULL
    # LedgerEntry { uint32 lastModifiedLedgerSeq; data: type ACCOUNT (0) -> AccountEntry { PublicKey accountID } }
    if xs_u32(p + 12) != 0 or xs_u32(p + 16) != 0:
        return NULL
    return p + 20


def ledger_map(buf, want=None):
    """Map one LedgerCloseMeta.

    Returns ``(version, protocol, seq, close_time, header_start, header_end, envelopes, txs,
    found)``: ``envelopes`` is bytes of native int64, 7 per envelope in tx-set order
    ``(start, end, envelope_type, tx_start, tx_end, inner_tx_start, inner_tx_end)`` (inner_* are
    -1 except for fee bumps); ``txs`` bytes of int64, 11 per ``txProcessing`` entry in apply order
    ``(start, end, result_start, result_end, fee_start, fee_end, meta_start, meta_end,
    post_start, post_end, result_code)`` -- read both with ``memoryview(...).cast("q")``.  The
    result pair's transaction hash is the 32 bytes before ``result_start``.  ``found`` is the
    apply index of the transaction whose hash or fee-bump inner hash is ``want`` (32 bytes),
    -1 if none or ``want`` is None.  ``candidates`` (a list of envelope indices) lists, for a found
    transaction, the envelopes whose fee source is the account its fee processing charged --
    the envelopes worth hashing first; empty when that account cannot be read.  Raises XdrError
    when malformed.
    """
    cdef Py_buffer view
    cdef Py_buffer wview
    cdef bint have_want = False
    cdef xs_ctx c
    cdef walk_t w
    cdef int rc
    cdef const uint8_t *p
    cdef const uint8_t *acct
    cdef const uint8_t *src
    cdef size_t i
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    w.env = NULL
    w.tx = NULL
    w.n_env = w.cap_env = w.n_tx = w.cap_tx = 0
    w.err = 0
    w.version = -1
    w.want = NULL
    w.found = -1
    p = <const uint8_t *>view.buf
    xs_init(&c, p, p + view.len, NULL, 0)
    try:
        if want is not None:
            PyObject_GetBuffer(want, &wview, PyBUF_SIMPLE)
            have_want = True
            if wview.len != 32:
                raise ValueError(f"want must be a 32-byte hash, got {wview.len} bytes")
            w.want = <const uint8_t *>wview.buf
        with nogil:
            rc = walk(p, p + view.len, &c, &w)
        if rc != 0:
            if w.err == 2:
                raise MemoryError()
            if w.err == 3:
                raise XdrError(f"malformed LedgerCloseMeta: unexpected transaction-set structure ({view.len} bytes)")
            raise _error(&c, "LedgerCloseMeta", view.len)
        cands = []
        if w.found >= 0:
            acct = fee_change_account(p, w.tx + w.found * TX_FIELDS, p + view.len)
            if acct != NULL:
                for i in range(w.n_env):
                    src = envelope_fee_source(p, w.env + i * ENV_FIELDS, p + view.len)
                    if src != NULL and memcmp(src, acct, 32) == 0:
                        cands.append(i)
        envs = PyBytes_FromStringAndSize(<const char *>w.env, <Py_ssize_t>(w.n_env * ENV_FIELDS * sizeof(int64_t))) \
            if w.n_env else b""
        txs = PyBytes_FromStringAndSize(<const char *>w.tx, <Py_ssize_t>(w.n_tx * TX_FIELDS * sizeof(int64_t))) \
            if w.n_tx else b""
        return (w.version, w.protocol, w.seq, w.close_time, w.header_start, w.header_end, envs, txs, w.found,
                cands)
    finally:
        free(w.env)
        free(w.tx)
        xs_free(&c)
        if have_want:
            PyBuffer_Release(&wview)
        PyBuffer_Release(&view)
