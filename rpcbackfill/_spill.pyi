"""Type stubs of the compiled spill router (ext/_spill.pyx)."""

from typing_extensions import Buffer, disjoint_base  # collections.abc.Buffer from Python 3.12

NSHARDS: int  # from ext/txhash_record.h; must equal rpcbackfill.records.NSHARDS
RECORD_SIZE: int  # from ext/txhash_record.h; must equal rpcbackfill.records.RECORD_SIZE

@disjoint_base  # a Cython extension type
class Router:
    pending: int
    def __init__(self) -> None: ...
    def add(self, seq: int, hashes: Buffer) -> int: ...
    def routed(self) -> list[int]: ...
    def flush(self, fds: list[int]) -> None: ...
