"""zstd as rpcbackfill stores and reads it: the compression level and one frame -> bytes.

Core module.  Both the LFS chunks (spec section 7) and the Galexie data-lake files (spec
section 5) hold one zstd frame per object, written at level 3 (the library default).
"""

from __future__ import annotations

# Spec section 7 and Galexie both compress at zstd level 3.
ZSTD_LEVEL = 3
