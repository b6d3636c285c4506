# cython: language_level=3
"""Native LedgerCloseMeta scanner: ledger sequence, header hashes and transaction hashes
straight from XDR bytes, validating the whole value against the generated grammar
(ext/_lcm_grammar.h, produced by tools/gen_xdr_grammar.py).  The GIL is released while
parsing; no Python object is created per XDR field.  Use rpcbackfill.lcm (the public wrapper).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from rpcbackfill.errors import XdrError


include "_xs_grammar.pxi"


SDK_VERSION = XS_SDK_VERSION.decode()
MAX_DEPTH = XS_MAX_DEPTH
MIN_LCM_SIZE = XS_MIN_SIZE_LedgerCloseMeta

# hashes kept on the stack before the list moves to the heap (128 x 32 B = 4 KiB)
cdef enum:
    STACK_HASHES = 128

include "_xs_error.pxi"


cdef inline const uint8_t *_scan_lcm(xs_ctx *c, const uint8_t *p, bint keep_hashes=False) noexcept nogil:
    """Scan one LedgerCloseMeta at p with captures; NULL (c.err set) unless each slot fired once.
    ``keep_hashes`` appends this ledger's tx hashes after those already collected in ``c``
    (a batch scan keeps every ledger's hashes in one buffer) instead of starting empty."""
    cdef const uint8_t *q
    cdef int k
    cdef size_t kept = c.n_hashes
    xs_reset_captures(c)
    if keep_hashes:
        c.n_hashes = kept
    q = xs_scan_LedgerCloseMeta(p, c, XS_MAX_DEPTH)
    if q == NULL:
        return NULL
    for k in range(XS_NSLOTS):
        if c.slot_hits[k] != 1:
            return xs_fail(c, XS_E_CAPTURE, p, -1)
    return q


cdef class _View:
    """Read-only view of any contiguous buffer (bytes, bytearray, memoryview, mmap...)."""

    cdef Py_buffer view
    cdef bint held
    cdef const uint8_t *ptr
    cdef Py_ssize_t size

    def __cinit__(self, obj):
        PyObject_GetBuffer(obj, &self.view, PyBUF_SIMPLE)
        self.held = True
        self.ptr = <const uint8_t *>self.view.buf
        self.size = self.view.len

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)
            self.held = False


cdef const uint8_t *_batch_header(_View v, uint32_t *start_seq, uint32_t *end_seq, uint32_t *count) except NULL:
    """Read and check a LedgerCloseMetaBatch header (start, end, count); return the first ledger's byte."""
    if v.size < 12:
        raise XdrError(f"malformed LedgerCloseMetaBatch: truncated input at byte 0 of {v.size} (header needs 12)")
    start_seq[0] = xs_u32(v.ptr)
    end_seq[0] = xs_u32(v.ptr + 4)
    count[0] = xs_u32(v.ptr + 8)
    if <uint64_t>end_seq[0] < <uint64_t>start_seq[0] or <uint64_t>count[0] != <uint64_t>end_seq[0] - start_seq[0] + 1:
        raise XdrError(
            f"malformed LedgerCloseMetaBatch: {count[0]} ledgers for sequences {start_seq[0]}..{end_seq[0]}"
        )
    if <uint64_t>count[0] * XS_MIN_SIZE_LedgerCloseMeta > <uint64_t>(v.size - 12):
        raise XdrError(
            f"malformed LedgerCloseMetaBatch: {count[0]} ledgers cannot fit in {v.size - 12} bytes"
        )
    return v.ptr + 12


cdef int _scan_whole(const uint8_t *p, Py_ssize_t n, xs_ctx *c) noexcept nogil:
    """Scan a buffer holding exactly one LedgerCloseMeta; 0 on success."""
    cdef const uint8_t *q = _scan_lcm(c, p)
    if q == NULL:
        return -1
    if q != p + n:
        xs_fail(c, XS_E_TRAIL, q, -1)
        return -1
    return 0


cdef int _scan_whole_or_raise(_View v, xs_ctx *c) except -1:
    """Scan ``v`` (exactly one LedgerCloseMeta) without the GIL; XdrError if malformed."""
    cdef int rc
    with nogil:
        rc = _scan_whole(v.ptr, v.size, c)
    if rc != 0:
        raise _error(c, "LedgerCloseMeta", v.size)
    return 0


def lcm_length(buf, Py_ssize_t offset=0):
    """Number of bytes the LedgerCloseMeta starting at ``offset`` of ``buf`` occupies (validated)."""
    cdef _View v = _View(buf)
    cdef xs_ctx c
    cdef const uint8_t *q
    if offset < 0 or offset > v.size:
        raise XdrError(f"malformed LedgerCloseMeta: offset {offset} outside buffer of {v.size} bytes")
    xs_init(&c, v.ptr, v.ptr + v.size, NULL, 0)
    with nogil:
        q = xs_skip_LedgerCloseMeta(v.ptr + offset, &c, XS_MAX_DEPTH)
    xs_free(&c)
    if q == NULL:
        raise _error(&c, "LedgerCloseMeta", v.size)
    return <Py_ssize_t>(q - (v.ptr + offset))


# The narrow scans are projections of ledger_info: every one validates the whole value, so
# they all run the same full pass; only what they hand back differs.

def ledger_sequence(buf):
    """Ledger sequence of one LedgerCloseMeta (the whole value is validated)."""
    return ledger_info(buf)[0]


def header_hashes(buf):
    """(LedgerHeaderHistoryEntry.hash, header.previousLedgerHash) of one LedgerCloseMeta."""
    info = ledger_info(buf)
    return info[1], info[2]


def tx_hashes(buf):
    """(ledger seq, concatenated 32-byte transaction hashes in apply order, fee-bump inner hash
    right after its outer hash) of one LedgerCloseMeta (the whole value is validated)."""
    info = ledger_info(buf)
    return info[0], info[3]


def ledger_info(buf):
    """Everything in one pass: (seq, header hash, previous ledger hash, tx hashes as in tx_hashes)."""
    cdef _View v = _View(buf)
    cdef xs_ctx c
    cdef uint8_t stackbuf[STACK_HASHES * 32]
    xs_init(&c, v.ptr, v.ptr + v.size, stackbuf, STACK_HASHES)
    try:
        _scan_whole_or_raise(v, &c)
        return (
            xs_u32(c.slot[XS_SLOT_SEQ]),
            PyBytes_FromStringAndSize(<const char *>c.slot[XS_SLOT_HEADER_HASH], 32),
            PyBytes_FromStringAndSize(<const char *>c.slot[XS_SLOT_PREV_HASH], 32),
            PyBytes_FromStringAndSize(<const char *>c.hashes, <Py_ssize_t>(c.n_hashes * 32)),
        )
    finally:
        xs_free(&c)


def tx_hashes_into(buf, out, Py_ssize_t out_offset=0):
    """Hot-path variant of tx_hashes: write the hashes into the writable buffer ``out`` at
    ``out_offset`` and return (ledger seq, number of hashes).  Raises ValueError (nothing
    written) if ``out`` is too small; XdrError if ``buf`` is malformed."""
    cdef _View v = _View(buf)
    cdef Py_buffer ob
    cdef xs_ctx c
    cdef uint8_t stackbuf[STACK_HASHES * 32]
    PyObject_GetBuffer(out, &ob, PyBUF_WRITABLE)
    xs_init(&c, v.ptr, v.ptr + v.size, stackbuf, STACK_HASHES)
    try:
        if out_offset < 0 or out_offset > ob.len:
            raise ValueError(f"out_offset {out_offset} outside output buffer of {ob.len} bytes")
        _scan_whole_or_raise(v, &c)
        if <size_t>(ob.len - out_offset) < c.n_hashes * 32:
            raise ValueError(
                f"output buffer too small: ledger {xs_u32(c.slot[XS_SLOT_SEQ])} has {c.n_hashes} hashes, "
                f"{ob.len - out_offset} bytes free"
            )
        memcpy(<uint8_t *>ob.buf + out_offset, c.hashes, c.n_hashes * 32)
        return xs_u32(c.slot[XS_SLOT_SEQ]), c.n_hashes
    finally:
        xs_free(&c)
        PyBuffer_Release(&ob)


cdef extern from "_lcm_head.h" nogil:
    const uint8_t *xs_head_seq(const uint8_t *p, xs_ctx *c, uint32_t *seq)


def header_sequence(buf):
    """ledgerSeq of the LedgerCloseMeta at the start of ``buf`` from a bounded parse of its
    prefix (union arm, ext, header fields up to ledgerSeq): microseconds whatever the ledger's
    size, but only that prefix is validated.  For bytes already proven to be a scanned ledger
    (the LFS verify pass: a zstd frame whose content checksum matched); XdrError if the prefix
    is malformed or truncated."""
    cdef _View v = _View(buf)
    cdef xs_ctx c
    cdef uint32_t seq = 0
    cdef const uint8_t *q
    xs_init(&c, v.ptr, v.ptr + v.size, NULL, 0)
    q = xs_head_seq(v.ptr, &c, &seq)
    xs_free(&c)
    if q == NULL:
        raise _error(&c, "LedgerCloseMeta header", v.size)
    return seq


def split_batch(buf):
    """LedgerCloseMetaBatch {uint32 startSequence; uint32 endSequence; LedgerCloseMeta<>}
    -> (start, end, [exact bytes of each LedgerCloseMeta]).  Checks count == end-start+1, that
    the ledgers carry start..end in order, and that nothing follows the batch."""
    return _split(buf, False)


def scan_batch(buf):
    """Like split_batch, keeping what the scan found: (start, end, [(seq, lcm, tx_hashes), ...])
    where ``lcm`` is a memoryview slice of ``buf`` (no copy) and ``tx_hashes`` is as in
    tx_hashes.  One pass over the batch yields everything ingestion needs per ledger."""
    return _split(buf, True)


cdef object _split(buf, bint with_hashes):
    cdef _View v = _View(buf)
    cdef xs_ctx c
    cdef const uint8_t *p = v.ptr
    cdef const uint8_t *end = v.ptr + v.size
    cdef const uint8_t *q
    cdef uint32_t start_seq, end_seq, count, i, seq = 0
    cdef size_t *offs = NULL
    cdef size_t *hoffs = NULL  # hoffs[i]: hashes collected before ledger i (with_hashes only)
    cdef int rc = 0
    cdef uint8_t stackbuf[STACK_HASHES * 32]
    p = _batch_header(v, &start_seq, &end_seq, &count)
    offs = <size_t *>malloc((<size_t>count + 1) * sizeof(size_t))
    if offs == NULL:
        raise MemoryError()
    hoffs = <size_t *>malloc((<size_t>count + 1) * sizeof(size_t))
    if hoffs == NULL:
        free(offs)
        raise MemoryError()
    xs_init(&c, v.ptr, end, stackbuf, STACK_HASHES)
    try:
        with nogil:
            offs[0] = <size_t>(p - v.ptr)
            hoffs[0] = 0
            i = 0
            while i < count:
                q = _scan_lcm(&c, p, with_hashes)
                if q == NULL:
                    rc = -1
                    break
                seq = xs_u32(c.slot[XS_SLOT_SEQ])
                if seq != start_seq + i:
                    rc = -2
                    break
                p = q
                i += 1
                offs[i] = <size_t>(p - v.ptr)
                hoffs[i] = c.n_hashes
            if rc == 0 and p != end:
                xs_fail(&c, XS_E_TRAIL, p, -1)
                rc = -1
        if rc == -1:
            raise _error(&c, f"LedgerCloseMetaBatch {start_seq}..{end_seq} (ledger #{i})", v.size)
        if rc == -2:
            raise XdrError(
                f"malformed LedgerCloseMetaBatch {start_seq}..{end_seq}: ledger #{i} has sequence {seq}, "
                f"expected {start_seq + i}"
            )
        if not with_hashes:
            metas = [
                PyBytes_FromStringAndSize(<const char *>v.ptr + offs[i], <Py_ssize_t>(offs[i + 1] - offs[i]))
                for i in range(count)
            ]
            return start_seq, end_seq, metas
        mv = memoryview(buf)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        ledgers = [
            (
                start_seq + i,
                mv[offs[i] : offs[i + 1]],
                PyBytes_FromStringAndSize(<const char *>c.hashes + hoffs[i] * 32,
                                          <Py_ssize_t>((hoffs[i + 1] - hoffs[i]) * 32)),
            )
            for i in range(count)
        ]
        return start_seq, end_seq, ledgers
    finally:
        free(offs)
        free(hoffs)
        xs_free(&c)


TYPE_NAMES = tuple(xs_type_names[i].decode() for i in range(XS_NUM_TYPES))
_TYPE_INDEX = {n: i for i, n in enumerate(TYPE_NAMES)}


def _skip_type(str name, buf, Py_ssize_t offset=0):
    """Testing aid: bytes the XDR value of grammar type ``name`` at ``offset`` occupies."""
    cdef _View v = _View(buf)
    cdef xs_ctx c
    cdef const uint8_t *q
    cdef int t
    cdef xs_skip_fn fn
    if name not in _TYPE_INDEX:
        raise KeyError(f"type {name} is not reachable from LedgerCloseMeta")
    t = _TYPE_INDEX[name]
    if offset < 0 or offset > v.size:
        raise XdrError(f"malformed {name}: offset {offset} outside buffer of {v.size} bytes")
    fn = xs_skip_table[t]
    if fn == NULL:
        if xs_const_size[t] > v.size - offset:
            raise XdrError(f"malformed {name}: truncated input at byte {offset} of {v.size}")
        return xs_const_size[t]
    xs_init(&c, v.ptr, v.ptr + v.size, NULL, 0)
    with nogil:
        q = fn(v.ptr + offset, &c, XS_MAX_DEPTH)
    xs_free(&c)
    if q == NULL:
        raise _error(&c, name, v.size)
    return <Py_ssize_t>(q - (v.ptr + offset))


cdef extern from "_lcm_auth.h" nogil:
    ctypedef struct xs_auth:
        uint32_t version
        const uint8_t *stored_hash
        const uint8_t *prev_hash
        const uint8_t *txset_hash
        const uint8_t *result_hash
        const uint8_t *hdr
        const uint8_t *hdr_end
        const uint8_t *txset
        const uint8_t *txset_end
        uint32_t n_results
        size_t results_len

    int xs_auth_locate(xs_ctx *c, const uint8_t *lcm, xs_auth *a)
    void xs_auth_results(xs_ctx *c, const xs_auth *a, uint8_t *out)


def auth_spans(buf):
    """What ledger authentication hashes, from one LedgerCloseMeta (the whole value validated):
    (seq, version, stored hash, previousLedgerHash, txSetHash, txSetResultHash,
    header_start, header_end, txset_start, txset_end, result_set, hashes).

    ``buf[header_start:header_end]`` is the LedgerHeader XDR, ``buf[txset_start:txset_end]`` the
    TransactionSet (version 0) or GeneralizedTransactionSet XDR, ``result_set`` the XDR of the
    TransactionResultSet built from txProcessing's result pairs in apply order; ``hashes`` the
    transaction hashes exactly as tx_hashes returns them (so one pass serves both)."""
    cdef _View v = _View(buf)
    cdef xs_ctx c
    cdef xs_auth a
    cdef int rc
    xs_init(&c, v.ptr, v.ptr + v.size, NULL, 0)
    c.at_mode = 1
    try:
        with nogil:
            rc = _scan_whole(v.ptr, v.size, &c)
            if rc == 0:
                rc = xs_auth_locate(&c, v.ptr, &a)
        if rc != 0:
            raise _error(&c, "LedgerCloseMeta", v.size)
        return (xs_u32(c.slot[XS_SLOT_SEQ]),) + _auth_tuple(&c, &a, v.ptr)
    finally:
        xs_free(&c)


cdef tuple _auth_tuple(xs_ctx *c, xs_auth *a, const uint8_t *base):
    """auth_spans' fields after the sequence, with offsets relative to ``base`` (the ledger's first byte)."""
    cdef bytes results = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>a.results_len)
    cdef bytes hashes = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>(c.n_at * 32))
    cdef uint8_t *w = <uint8_t *>PyBytes_AS_STRING(hashes)
    cdef size_t i
    xs_auth_results(c, a, <uint8_t *>PyBytes_AS_STRING(results))
    for i in range(c.n_at):
        memcpy(w + i * 32, c.at[i], 32)
    return (
        a.version,
        PyBytes_FromStringAndSize(<const char *>a.stored_hash, 32),
        PyBytes_FromStringAndSize(<const char *>a.prev_hash, 32),
        PyBytes_FromStringAndSize(<const char *>a.txset_hash, 32),
        PyBytes_FromStringAndSize(<const char *>a.result_hash, 32),
        <Py_ssize_t>(a.hdr - base),
        <Py_ssize_t>(a.hdr_end - base),
        <Py_ssize_t>(a.txset - base),
        <Py_ssize_t>(a.txset_end - base),
        results,
        hashes,
    )


def auth_batch(buf):
    """scan_batch for authentication, in the same single pass per ledger: (start, end,
    [(seq, lcm, version, stored hash, previousLedgerHash, txSetHash, txSetResultHash,
    header_start, header_end, txset_start, txset_end, result_set, hashes), ...]) where ``lcm`` is
    a memoryview slice of ``buf`` and the offsets are relative to it (see auth_spans).  Same batch
    checks as split_batch."""
    cdef _View v = _View(buf)
    cdef xs_ctx c
    cdef xs_auth a
    cdef const uint8_t *p = v.ptr
    cdef const uint8_t *end = v.ptr + v.size
    cdef const uint8_t *q = NULL
    cdef uint32_t start_seq, end_seq, count, i, seq
    cdef int rc = 0
    p = _batch_header(v, &start_seq, &end_seq, &count)
    mv = memoryview(buf)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    out = []
    xs_init(&c, v.ptr, end, NULL, 0)
    c.at_mode = 1
    try:
        for i in range(count):
            with nogil:
                q = _scan_lcm(&c, p)
                rc = 0 if q != NULL else -1
                if rc == 0:
                    rc = xs_auth_locate(&c, p, &a)
            if rc != 0:
                raise _error(&c, f"LedgerCloseMetaBatch {start_seq}..{end_seq} (ledger #{i})", v.size)
            seq = xs_u32(c.slot[XS_SLOT_SEQ])
            if seq != start_seq + i:
                raise XdrError(
                    f"malformed LedgerCloseMetaBatch {start_seq}..{end_seq}: ledger #{i} has sequence {seq}, "
                    f"expected {start_seq + i}"
                )
            out.append((seq, mv[p - v.ptr : q - v.ptr]) + _auth_tuple(&c, &a, p))
            p = q
        if p != end:
            xs_fail(&c, XS_E_TRAIL, p, -1)
            raise _error(&c, f"LedgerCloseMetaBatch {start_seq}..{end_seq}", v.size)
        return start_seq, end_seq, out
    finally:
        xs_free(&c)
