"""``stellar-rpc detect-gaps``: which ledgers of ``[start, end]`` have no object in the lake.

Works like Galexie's ``detect-gaps``: the layout the backfill would read the lake with
(``datalake.lake_layout``: the lake's ``.config.json``, checked against the configured
``[backfill.buffered_storage] ledgers_per_file`` / ``files_per_partition``; for a lake without a
manifest, those two keys) gives the object keys, then each
partition directory covering the range is *listed* once (``list_keys(prefix=...)``, one
list operation per partition, paged by the store) and the listing is compared with the
object keys the range needs.  No object is downloaded and nothing is requested per ledger,
so a 10M-ledger check costs a few hundred list pages.  Only presence is checked; the content
of an object is checked when it is read (``verify --against-source`` or a backfill).

Works with any object store offering ``get``/``exists``/``list_keys`` (local directory, GCS, S3).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import PUBNET_PASSPHRASE, BufferedStorageConfig
from ..errors import InputError
from ..ledgermath import FIRST_LEDGER, UINT32_MAX
from . import layout
from .objstore import ObjectMissing

log = logging.getLogger(__name__)


@dataclass
class GapReport:
    lake: str
    start_ledger: int
    end_ledger: int
    ledgers_per_batch: int
    batches_per_partition: int
    file_ext: str
    list_calls: int = 0
    objects_expected: int = 0
    objects_found: int = 0
    missing_keys: list[str] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)  # inclusive ledger ranges
    elapsed_s: float = 0.0

    @property
    def ledgers_missing(self) -> int:
        return sum(b - a + 1 for a, b in self.missing)

    def to_json(self) -> dict[str, Any]:
        return {
            "lake": self.lake,
            "start_ledger": self.start_ledger,
            "end_ledger": self.end_ledger,
            "complete": not self.missing,
            "ledgers_per_batch": self.ledgers_per_batch,
            "batches_per_partition": self.batches_per_partition,
            "file_ext": self.file_ext,
            "list_calls": self.list_calls,
            "objects_expected": self.objects_expected,
            "objects_found": self.objects_found,
            "objects_missing": len(self.missing_keys),
            "ledgers_missing": self.ledgers_missing,
            "missing": [{"start": a, "end": b} for a, b in self.missing],
            "missing_keys": list(self.missing_keys),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def format_text(self) -> str:
        lines = [
            f"lake {self.lake}: ledgers {self.start_ledger}-{self.end_ledger}, {self.objects_expected} objects "
            f"expected ({self.ledgers_per_batch} ledgers per object), {self.list_calls} list calls, "
            + (
                f"{len(self.missing_keys)} objects missing ({self.ledgers_missing} ledgers)"
                if self.missing
                else "none missing"
            )
        ]
        if self.missing:
            lines.append("missing ledgers: " + ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in self.missing))
            lines.append("missing objects:")
            lines.extend(f"  {k}" for k in self.missing_keys)
        return "\n".join(lines)


def _read_schema(store, config: BufferedStorageConfig | None, network_passphrase: str) -> layout.LakeSchema:
    from .datalake import lake_layout

    url = getattr(store, "url", "lake")
    try:
        raw = store.get(layout.MANIFEST_NAME)
    except ObjectMissing:
        raw = None
    return lake_layout(raw, config or BufferedStorageConfig(), network_passphrase, layout.FILE_EXT, url)[0]


def _prefixes(start: int, end: int, schema: layout.LakeSchema) -> list[str]:
    """One listing prefix per partition covering ``[start, end]`` (the whole lake without partitions)."""
    if schema.batches_per_partition <= 1:
        return [""]
    p = schema.ledgers_per_partition
    return [layout.partition_prefix(s, schema) for s in range(start // p * p, end + 1, p)]


def detect_gaps(
    store,
    start: int,
    end: int,
    config: BufferedStorageConfig | None = None,
    network_passphrase: str = PUBNET_PASSPHRASE,
) -> GapReport:
    """List the lake's partitions over ``[start, end]`` and report every missing object.

    ``config`` is the configured ``[backfill.buffered_storage]``: its layout keys are used for a
    lake without a manifest and must agree with a manifest (``LakeConfigError`` otherwise)."""
    if start < FIRST_LEDGER or end < start or end > UINT32_MAX:
        raise InputError(
            f"--start-ledger/--end-ledger must satisfy 2 <= start <= end <= {UINT32_MAX}, got {start}-{end}"
        )
    t0 = time.monotonic()
    schema = _read_schema(store, config, network_passphrase)
    report = GapReport(
        getattr(store, "url", "lake"),
        start,
        end,
        schema.ledgers_per_batch,
        schema.batches_per_partition,
        schema.file_ext,
    )
    present: set[int] = set()
    exts: set[str] = set()
    prefixes = _prefixes(start, end, schema)
    for i, prefix in enumerate(prefixes):
        keys = store.list_keys(None, prefix=prefix)
        report.list_calls += 1
        for key in keys:
            parsed = layout.parse_file_name(key.rsplit("/", 1)[-1])
            if parsed is None:
                continue
            first, _, ext = parsed
            # only objects named exactly as the layout would name them count as present
            if key == layout.object_key(first, dataclasses.replace(schema, file_ext=ext)):
                present.add(first)
                exts.add(ext)
        if len(prefixes) > 1 and (i + 1) % 100 == 0:
            log.info("detect-gaps: listed %d/%d partitions", i + 1, len(prefixes))
    if len(exts) == 1:
        schema = dataclasses.replace(schema, file_ext=exts.pop())
        report.file_ext = schema.file_ext
    lpb = schema.ledgers_per_batch
    for b in layout.batch_starts(start, end, schema):
        report.objects_expected += 1
        if b in present:
            report.objects_found += 1
            continue
        report.missing_keys.append(layout.object_key(max(b, start), schema))
        a, z = max(b, start), min(b + lpb - 1, end)
        if report.missing and report.missing[-1][1] + 1 == a:
            report.missing[-1] = (report.missing[-1][0], z)
        else:
            report.missing.append((a, z))
    report.elapsed_s = time.monotonic() - t0
    log.info(
        "detect-gaps: %s ledgers %d-%d: %d of %d objects present, %d list calls, %.1fs",
        report.lake,
        start,
        end,
        report.objects_found,
        report.objects_expected,
        report.list_calls,
        report.elapsed_s,
    )
    return report


__all__ = ["GapReport", "detect_gaps"]
