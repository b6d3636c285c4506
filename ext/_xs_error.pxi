# Shared by the Cython modules that run the _lcm_grammar.h scanner: turns a failed scan's
# context (xs_ctx) into the XdrError message. Included textually (``include``); the including
# module declares xs_ctx, XS_NUM_TYPES and xs_type_names and imports XdrError.

_REASONS = (
    "ok",
    "truncated input",
    "unknown union discriminant",
    "invalid enum value",
    "bool other than 0 or 1",
    "optional flag other than 0 or 1",
    "length above its XDR bound",
    "array count exceeds the remaining bytes",
    "non-zero padding byte",
    "nesting deeper than the recursion limit",
    "out of memory",
    "trailing bytes after the value",
    "ledger header fields not found exactly once",
)


cdef object _error(xs_ctx *c, str what, Py_ssize_t total):
    reason = _REASONS[c.err] if 0 <= c.err < len(_REASONS) else f"error {c.err}"
    where = ""
    if 0 <= c.err_type < XS_NUM_TYPES:
        where = " (in " + xs_type_names[c.err_type].decode() + ")"
    return XdrError(f"malformed {what}: {reason} at byte {c.err_off} of {total}{where}")
