# The C interface of the generated scanner (ext/_lcm_grammar.h), declared once for every Cython
# module that runs it (ext/_lcm.pyx, ext/_txmap.pyx).  Included textually (``include``): the
# including module cimports uint8_t and uint32_t from libc.stdint.

cdef extern from "_lcm_grammar.h" nogil:
    ctypedef struct xs_ctx:
        const uint8_t *start
        const uint8_t *end
        int err
        int err_type
        size_t err_off
        const uint8_t *slot[3]
        uint32_t slot_hits[3]
        uint8_t *hashes
        size_t n_hashes
        size_t cap_hashes
        int hashes_on_heap
        int at_mode
        const uint8_t **at
        size_t n_at

    enum:
        XS_MAX_DEPTH
        XS_NUM_TYPES
        XS_OK
        XS_E_TRUNC
        XS_E_TRAIL
        XS_E_CAPTURE
        XS_E_COUNT
        XS_E_NOMEM
        XS_SLOT_SEQ
        XS_SLOT_HEADER_HASH
        XS_SLOT_PREV_HASH
        XS_NSLOTS
        XS_MIN_SIZE_LedgerCloseMeta

    const char *XS_SDK_VERSION
    const char *xs_type_names[]

    void xs_init(xs_ctx *c, const uint8_t *start, const uint8_t *end, uint8_t *hashbuf, size_t hashcap)
    void xs_reset_captures(xs_ctx *c)
    void xs_free(xs_ctx *c)
    const uint8_t *xs_fail(xs_ctx *c, int code, const uint8_t *at, int type_id)
    uint32_t xs_u32(const uint8_t *p)
    const uint8_t *xs_scan_LedgerCloseMeta(const uint8_t *p, xs_ctx *c, int depth)
    const uint8_t *xs_skip_LedgerCloseMeta(const uint8_t *p, xs_ctx *c, int depth)
    ctypedef const uint8_t *(*xs_skip_fn)(const uint8_t *, xs_ctx *, int) noexcept nogil
    const xs_skip_fn xs_skip_table[]
    const int xs_const_size[]
