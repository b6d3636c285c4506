# cython: language_level=3
"""Ingest hot path of the txhash spill store: route 32-byte hashes into 16 shard buffers.

A record is the 32-byte hash followed by the ledger sequence as uint32 little-endian (36 bytes);
the shard is the hash's first hex digit (hash[0] >> 4).  Buffers are C memory, flushed with
write(2) with the GIL released.  Public wrapper: rpcbackfill/index/spill.py.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memmove
from libc.errno cimport errno, EINTR
from posix.unistd cimport write

import os

cdef extern from "txhash_record.h":
    enum:
        RB_NSHARDS
        RB_RECORD_SIZE
        RB_HASH_SIZE

cdef enum:
    INIT_CAP = 1 << 16  # bytes per shard buffer to start with; grows by doubling


# Exported so rpcbackfill.index.spill can check them against rpcbackfill.records at import.
NSHARDS = RB_NSHARDS
RECORD_SIZE = RB_RECORD_SIZE


cdef class Router:
    cdef uint8_t *buf[RB_NSHARDS]
    cdef size_t blen[RB_NSHARDS]
    cdef size_t bcap[RB_NSHARDS]
    cdef uint64_t cnt[RB_NSHARDS]
    cdef readonly size_t pending

    def __cinit__(self):
        cdef int i
        for i in range(RB_NSHARDS):
            self.buf[i] = NULL
            self.blen[i] = 0
            self.bcap[i] = 0
            self.cnt[i] = 0
        self.pending = 0
        for i in range(RB_NSHARDS):
            self.buf[i] = <uint8_t *>malloc(INIT_CAP)
            if self.buf[i] == NULL:
                raise MemoryError()
            self.bcap[i] = INIT_CAP

    def __dealloc__(self):
        cdef int i
        for i in range(RB_NSHARDS):
            free(self.buf[i])
            self.buf[i] = NULL

    cdef int _reserve(self, int s, size_t extra) noexcept nogil:
        cdef size_t need = self.blen[s] + extra
        cdef size_t cap = self.bcap[s]
        cdef uint8_t *p
        if need <= cap:
            return 0
        while cap < need:
            cap *= 2
        p = <uint8_t *>realloc(self.buf[s], cap)
        if p == NULL:
            return -1
        self.buf[s] = p
        self.bcap[s] = cap
        return 0

    def add(self, uint32_t seq, const uint8_t[::1] hashes):
        """Route concatenated 32-byte hashes of ledger ``seq``; returns the bytes now pending."""
        cdef Py_ssize_t n = hashes.shape[0] // RB_HASH_SIZE, i
        cdef int s, rc = 0
        cdef uint8_t le[4]
        cdef uint8_t *dst
        if hashes.shape[0] % RB_HASH_SIZE:
            raise ValueError(f"hash buffer of {hashes.shape[0]} bytes is not a multiple of {RB_HASH_SIZE}")
        if n == 0:
            return self.pending
        le[0] = seq & 0xff
        le[1] = (seq >> 8) & 0xff
        le[2] = (seq >> 16) & 0xff
        le[3] = (seq >> 24) & 0xff
        with nogil:
            for i in range(n):
                s = hashes[i * RB_HASH_SIZE] >> 4
                if self.blen[s] + RB_RECORD_SIZE > self.bcap[s]:
                    if self._reserve(s, RB_RECORD_SIZE) != 0:
                        rc = -1
                        break
                dst = self.buf[s] + self.blen[s]
                memcpy(dst, &hashes[i * RB_HASH_SIZE], RB_HASH_SIZE)
                memcpy(dst + RB_HASH_SIZE, le, RB_RECORD_SIZE - RB_HASH_SIZE)
                self.blen[s] += RB_RECORD_SIZE
                self.cnt[s] += 1
                self.pending += RB_RECORD_SIZE
        if rc:
            raise MemoryError("spill buffer allocation failed")
        return self.pending

    def routed(self):
        """Records routed per shard since this router was created."""
        return [self.cnt[i] for i in range(RB_NSHARDS)]

    def flush(self, fds):
        """write(2) every buffered record to fds[shard] (GIL released); buffers are emptied.

        Raises OSError(errno) on failure; bytes not yet written stay buffered."""
        cdef int s, fd, err = 0
        cdef Py_ssize_t w
        cdef size_t off
        if len(fds) != RB_NSHARDS:
            raise ValueError(f"need {RB_NSHARDS} file descriptors")
        for s in range(RB_NSHARDS):
            if self.blen[s] == 0:
                continue
            fd = fds[s]
            off = 0
            with nogil:
                while off < self.blen[s]:
                    w = write(fd, self.buf[s] + off, self.blen[s] - off)
                    if w < 0:
                        if errno == EINTR:
                            continue
                        err = errno
                        break
                    off += <size_t>w
            if off:
                # keep any unwritten tail at the front of the buffer
                if off < self.blen[s]:
                    memmove(self.buf[s], self.buf[s] + off, self.blen[s] - off)
                self.blen[s] -= off
                self.pending -= off
            if err:
                raise OSError(err, os.strerror(err))
