"""Type stubs of the compiled RecSplit kernels (ext/_recsplit.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer, disjoint_base  # collections.abc.Buffer from Python 3.12

LEAF: int
LOWER_AGGR: int
UPPER_AGGR: int
BUCKET_SIZE: int
MAX_BUCKET: int
EF_SAMPLE: int
RECORD_SIZE: int
OK: int
ERR_ORDER: int
ERR_COLLISION: int
ERR_NOMEM: int
ERR_TOOBIG: int
ERR_COUNT: int
ERR_DUPLICATE: int
ERR_VALUE: int

def simd_enabled() -> bool: ...
def set_simd(enabled: bool) -> bool: ...
def golomb_params(m: int) -> tuple[int, int, int]: ...
def bucket_hashes(records: Buffer | npt.NDArray[Any], bucket_salt: int) -> npt.NDArray[np.uint64]: ...
def key_hashes(keys: Buffer, bucket_salt: int) -> npt.NDArray[np.uint64]: ...

@disjoint_base  # a Cython extension type
class Builder:
    n_keys: int
    n_buckets: int
    def __init__(
        self,
        n_keys: int,
        n_buckets: int,
        bucket_salt: int,
        split_salt: int,
        range_start: int,
        force_collision: bool = False,
    ) -> None: ...
    def add_records(self, records: Buffer) -> tuple[int, int]: ...
    def finish(self) -> int: ...
    @property
    def added(self) -> int: ...
    @property
    def max_bucket(self) -> int: ...
    @property
    def values(self) -> npt.NDArray[np.uint32]: ...
    def seed_bits(self) -> tuple[npt.NDArray[np.uint64], int]: ...
    def elias_fano(
        self, which: str
    ) -> tuple[int, int, npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.uint64]]: ...

@disjoint_base  # a Cython extension type
class Index:
    n_keys: int
    range_start: int
    name: str
    def __init__(
        self, buf: Buffer, name: str, corrupt: type[Exception] = ValueError, unsupported: type[Exception] = ValueError
    ) -> None: ...
    def release(self) -> None: ...
    def lookup(self, key: Buffer) -> int | None: ...
    def lookup_many(self, keys: Buffer) -> npt.NDArray[np.uint32]: ...
