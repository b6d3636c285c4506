"""Access to the native LCM scanner (``rpcbackfill.lcm``) for the sources, in one place."""

from __future__ import annotations

from ..errors import SourceError


def lcm_module():
    """The ``rpcbackfill.lcm`` module; ``SourceError`` if the extension is not built."""
    try:
        from .. import lcm
    except ImportError as e:  # the native scanner is part of every build
        raise SourceError(f"rpcbackfill.lcm is unavailable ({e}); build the _lcm extension") from None
    return lcm
