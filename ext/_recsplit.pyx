# cython: language_level=3
"""RecSplit kernels (build, lookup, keyed hashing) for rpcbackfill.index.

The algorithm lives in recsplit_core.h (C); this module wraps it for Python:
``bucket_hashes`` (compaction sort keys), ``Builder`` (streaming build), ``Index`` (lookups
over a mapped file).  Public API and file format: rpcbackfill/index/recsplit.py.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "recsplit_core.h" nogil:
    int RS_LEAF, RS_LOWER_AGGR, RS_UPPER_AGGR, RS_BUCKET_SIZE, RS_MAX_M, RS_EF_SAMPLE
    int RS_OK, RS_ERR_ORDER, RS_ERR_COLLISION, RS_ERR_NOMEM, RS_ERR_TOOBIG, RS_ERR_COUNT, RS_ERR_DUPLICATE

    ctypedef struct rs_keys:
        uint64_t kb[4]
        uint64_t ks[4]
        uint64_t kf
    void rs_keys_init(rs_keys *K, uint64_t bucket_salt, uint64_t split_salt)
    uint64_t rs_hash_bucket(const rs_keys *K, const uint8_t *key)
    uint64_t rs_bucket_of(uint64_t h1, uint64_t n_buckets)
    void rs_init_tables()
    uint8_t rs_golomb_k[]
    uint32_t rs_fixed_bits[]
    uint32_t rs_nodes[]

    ctypedef struct rs_bits:
        uint64_t *w
        uint64_t nbits
        uint64_t cap

    ctypedef struct rs_ef:
        uint64_t n
        uint32_t l
        const uint64_t *low
        const uint64_t *high
        const uint64_t *samples

    ctypedef struct rs_ef_built:
        uint64_t n
        uint32_t l
        uint64_t n_low, n_high, n_samples
        uint64_t *low
        uint64_t *high
        uint64_t *samples
    int rs_ef_build(const uint64_t *v, uint64_t n, rs_ef_built *e)
    void rs_ef_free(rs_ef_built *e)

    ctypedef struct rs_builder:
        uint64_t n_keys, n_buckets, added
        uint64_t *cum_keys
        uint64_t *bit_pos
        rs_bits bits
        int force_collision
        uint32_t max_bucket
    rs_builder *rs_builder_new(uint64_t n_keys, uint64_t n_buckets, uint64_t bucket_salt, uint64_t split_salt,
                               uint32_t *out)
    void rs_builder_free(rs_builder *b)
    int rs_builder_add(rs_builder *b, const uint8_t *key, uint32_t value)
    int rs_builder_finish(rs_builder *b)

    ctypedef struct rs_index:
        uint64_t n_keys, n_buckets
        uint32_t range_start
    int RS_LOOKUP_ABSENT, RS_LOOKUP_DAMAGED, RS_OPEN_OK, RS_OPEN_CORRUPT, RS_OPEN_UNSUPPORTED
    int rs_index_open(rs_index *ix, const uint8_t *buf, uint64_t size, char *err, size_t errlen)
    int64_t rs_lookup(const rs_index *ix, const uint8_t *key)
    uint64_t rs_lookup_batch(const rs_index *ix, const uint8_t *keys, uint64_t n, uint32_t *out, uint32_t base)
    void rs_detect_simd()
    int rs_simd


# The parameter tables (rs_init_tables: Rice parameters of every bucket size up to RS_MAX_M)
# cost ~23 ms of CPU to compute (~65 ms before rs_best_k stopped at its minimum: up to ~3 million
# exp() calls).  They are computed on first use -- a
# Builder, an Index or golomb_params, always with the GIL held, so only once -- not at import:
# chunk workers, the coordinator and the serve path import this module without building or
# reading an index and must not pay for them.
rs_detect_simd()


def simd_enabled():
    """True when the seed searches use the AVX-512 kernels (RPCBACKFILL_RECSPLIT_SCALAR=1 disables)."""
    return rs_simd == 1


def set_simd(bint enabled):
    """Select the AVX-512 (if the CPU has it) or scalar seed search; returns the previous state.

    Both produce identical files; this exists for tests and benchmarks."""
    global rs_simd
    cdef int prev = rs_simd
    rs_simd = 0
    if enabled:
        rs_simd = -1
        rs_detect_simd()
    return prev == 1

LEAF = RS_LEAF
LOWER_AGGR = RS_LOWER_AGGR
UPPER_AGGR = RS_UPPER_AGGR
BUCKET_SIZE = RS_BUCKET_SIZE
MAX_BUCKET = RS_MAX_M
EF_SAMPLE = RS_EF_SAMPLE

OK = RS_OK
ERR_ORDER = RS_ERR_ORDER
ERR_COLLISION = RS_ERR_COLLISION
ERR_NOMEM = RS_ERR_NOMEM
ERR_TOOBIG = RS_ERR_TOOBIG
ERR_COUNT = RS_ERR_COUNT
ERR_DUPLICATE = RS_ERR_DUPLICATE
cdef extern from "txhash_record.h":
    enum:
        RB_RECORD_SIZE  # spill/sorted record: 32-byte hash + uint32 LE ledger

cdef enum:
    C_ERR_VALUE = 100  # a value (ledger - range start) outside [0, 2**24)

ERR_VALUE = C_ERR_VALUE
RECORD_SIZE = RB_RECORD_SIZE  # checked against rpcbackfill.records at import (index/recsplit.py)


def golomb_params(uint32_t m):
    """(rice parameter, subtree fixed bits, subtree nodes) of a node of m keys (tests/docs)."""
    if m > <uint32_t>RS_MAX_M:
        raise ValueError(f"m={m} exceeds {RS_MAX_M}")
    rs_init_tables()
    return rs_golomb_k[m], rs_fixed_bits[m], rs_nodes[m]


cdef object _bucket_hashes(const uint8_t[::1] buf, Py_ssize_t stride, Py_ssize_t n, uint64_t bucket_salt):
    """Salted bucket hash of the 32-byte key at the start of each of ``n`` ``stride``-byte items."""
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef rs_keys K
    cdef Py_ssize_t i
    rs_keys_init(&K, bucket_salt, 0)
    if n:
        with nogil:
            for i in range(n):
                o[i] = rs_hash_bucket(&K, &buf[i * stride])
    return out


def bucket_hashes(const uint8_t[::1] records, uint64_t bucket_salt):
    """Salted bucket hash (uint64) of each 36-byte record's 32-byte key, GIL released."""
    cdef Py_ssize_t n = records.shape[0] // RB_RECORD_SIZE
    if records.shape[0] % RB_RECORD_SIZE:
        raise ValueError(f"record buffer of {records.shape[0]} bytes is not a multiple of {RB_RECORD_SIZE}")
    return _bucket_hashes(records, RB_RECORD_SIZE, n, bucket_salt)


def key_hashes(const uint8_t[::1] keys, uint64_t bucket_salt):
    """Salted bucket hash of each 32-byte key (tests)."""
    cdef Py_ssize_t n = keys.shape[0] // 32
    return _bucket_hashes(keys, 32, n, bucket_salt)


cdef object _u64_array(const uint64_t *p, uint64_t n):
    a = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] v = a
    if n:
        memcpy(&v[0], p, n * 8)
    return a


cdef class Builder:
    """Streaming RecSplit builder: feed 36-byte records in bucket-hash order, then finish()."""

    cdef rs_builder *b
    cdef object out
    cdef readonly uint64_t n_keys, n_buckets
    cdef uint32_t range_start

    def __cinit__(self, uint64_t n_keys, uint64_t n_buckets, uint64_t bucket_salt, uint64_t split_salt,
                  uint32_t range_start, bint force_collision=False):
        self.out = np.zeros(n_keys, dtype=np.uint32)
        cdef uint32_t[::1] o = self.out
        cdef uint32_t *p = &o[0] if n_keys else NULL
        self.b = rs_builder_new(n_keys, n_buckets, bucket_salt, split_salt, p)
        if self.b == NULL:
            raise MemoryError("RecSplit builder allocation failed")
        self.b.force_collision = force_collision
        self.n_keys = n_keys
        self.n_buckets = n_buckets
        self.range_start = range_start

    def __dealloc__(self):
        rs_builder_free(self.b)
        self.b = NULL

    def add_records(self, const uint8_t[::1] records):
        """Add whole 36-byte records.  Returns (status, index of the failing record or -1)."""
        cdef Py_ssize_t n = records.shape[0] // RB_RECORD_SIZE
        cdef Py_ssize_t i = 0
        cdef int rc = RS_OK
        cdef uint32_t seq, v
        cdef const uint8_t *r
        if records.shape[0] % RB_RECORD_SIZE:
            raise ValueError(f"record buffer of {records.shape[0]} bytes is not a multiple of {RB_RECORD_SIZE}")
        if n == 0:
            return RS_OK, -1
        with nogil:
            for i in range(n):
                r = &records[i * RB_RECORD_SIZE]
                seq = <uint32_t>r[32] | (<uint32_t>r[33] << 8) | (<uint32_t>r[34] << 16) | (<uint32_t>r[35] << 24)
                if seq < self.range_start or seq - self.range_start >= (1u << 24):
                    rc = C_ERR_VALUE
                    break
                v = seq - self.range_start
                rc = rs_builder_add(self.b, r, v)
                if rc != RS_OK:
                    break
        return rc, (i if rc != RS_OK else -1)

    def finish(self):
        cdef int rc
        with nogil:
            rc = rs_builder_finish(self.b)
        return rc

    @property
    def added(self):
        return self.b.added

    @property
    def max_bucket(self):
        return self.b.max_bucket

    @property
    def values(self):
        """uint32 records (value | fingerprint << 24) in MPHF order."""
        return self.out

    def seed_bits(self):
        """(Golomb-Rice stream as uint64 words, length in bits)."""
        nwords = (self.b.bits.nbits + 63) // 64
        return _u64_array(self.b.bits.w, nwords), self.b.bits.nbits

    def elias_fano(self, which):
        """Elias-Fano of cumulative keys ('keys') or bit positions ('bits') over buckets 0..n_buckets.

        Returns (n, l, low, high, samples) with numpy uint64 arrays."""
        cdef rs_ef_built e
        cdef const uint64_t *src = self.b.cum_keys if which == "keys" else self.b.bit_pos
        if rs_ef_build(src, self.n_buckets + 1, &e) != 0:
            rs_ef_free(&e)
            raise MemoryError("Elias-Fano allocation failed")
        try:
            return (e.n, e.l, _u64_array(e.low, e.n_low), _u64_array(e.high, e.n_high),
                    _u64_array(e.samples, e.n_samples))
        finally:
            rs_ef_free(&e)


cdef class Index:
    """Lookups over a mapped index file (layout: docs/recsplit-format.md).

    The constructor validates the header and section table (rs_index_open) and raises
    ``corrupt(msg)`` or ``unsupported(msg)`` -- the caller's exception classes -- with ``msg``
    naming ``name``; a lookup that meets impossible directory or seed data raises ``corrupt``.
    ``buf`` must stay alive and unchanged while this object exists; call release() before
    closing the mapping."""

    cdef rs_index ix
    cdef const uint8_t[::1] view
    cdef readonly uint64_t n_keys
    cdef readonly uint32_t range_start
    cdef readonly str name
    cdef object corrupt
    cdef bint live

    def __cinit__(self, buf, str name, corrupt=ValueError, unsupported=ValueError):
        cdef char err[256]
        cdef int rc
        self.name = name
        self.corrupt = corrupt
        self.view = buf
        if self.view.shape[0] == 0:
            raise corrupt(f"index {name} is empty")
        rs_init_tables()  # the lookups walk the trees with them (GIL held: computed once)
        rc = rs_index_open(&self.ix, &self.view[0], self.view.shape[0], err, sizeof(err))
        if rc != RS_OPEN_OK:
            self.view = None
            msg = f"index {name}: {err.decode('ascii', 'replace')}"
            raise (unsupported if rc == RS_OPEN_UNSUPPORTED else corrupt)(msg)
        self.n_keys = self.ix.n_keys
        self.range_start = self.ix.range_start
        self.live = True

    def release(self):
        self.live = False
        self.view = None

    cdef _damaged(self, key):
        return self.corrupt(f"index {self.name}: the bucket directory or seeds met by hash {bytes(key).hex()} "
                            "are impossible (damaged file)")

    def lookup(self, key):
        """Absolute ledger of a 32-byte key, or None when the key is certainly absent."""
        cdef const uint8_t[::1] view
        cdef const uint8_t *p
        cdef int64_t v
        if not self.live:
            raise ValueError(f"index {self.name} is closed")
        if type(key) is bytes:  # fast path: no buffer acquisition
            if PyBytes_GET_SIZE(key) != 32:
                raise ValueError(f"key must be 32 bytes, got {PyBytes_GET_SIZE(key)}")
            p = <const uint8_t *>PyBytes_AS_STRING(key)
            v = rs_lookup(&self.ix, p)
        else:
            view = key
            if view.shape[0] != 32:
                raise ValueError(f"key must be 32 bytes, got {view.shape[0]}")
            v = rs_lookup(&self.ix, &view[0])
        if v < 0:
            if v == RS_LOOKUP_DAMAGED:
                raise self._damaged(key)
            return None
        return self.range_start + v

    def lookup_many(self, const uint8_t[::1] keys):
        """Absolute ledgers (uint32, 0 = not found) of concatenated 32-byte keys; GIL released."""
        if not self.live:
            raise ValueError(f"index {self.name} is closed")
        if keys.shape[0] % 32:
            raise ValueError(f"key buffer of {keys.shape[0]} bytes is not a multiple of 32")
        cdef Py_ssize_t n = keys.shape[0] // 32, i
        cdef uint64_t bad
        out = np.zeros(n, dtype=np.uint32)
        if n == 0:
            return out
        cdef uint32_t[::1] o = out
        with nogil:
            bad = rs_lookup_batch(&self.ix, &keys[0], n, &o[0], self.range_start)
        if bad:
            for i in range(n):  # name the first key that met damage
                if rs_lookup(&self.ix, &keys[i * 32]) == RS_LOOKUP_DAMAGED:
                    raise self._damaged(bytes(keys[i * 32:(i + 1) * 32]))
            raise self.corrupt(f"index {self.name}: {bad} lookups met impossible directory or seed data")
        return out
