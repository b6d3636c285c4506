"""``stellar-rpc dev ...``: developer tools (the foundation CLI attaches the ``dev`` group).

stellar-rpc dev generate-lake --output /tmp/lake --first 2 --last 10001 --tx-per-ledger 300
"""

from __future__ import annotations

import sys
import time

import click

from ..config import PUBNET_PASSPHRASE
from ..ledgermath import FIRST_LEDGER
from .lakegen import DEFAULT_TX_PER_LEDGER, MAX_GENERATED_LEDGER, MAX_TX_PER_LEDGER

# Progress lines on stderr at most this often (seconds).
PROGRESS_EVERY_S = 2.0


class _Progress:
    """Throttled one-line progress on stderr: ledgers done, rate, ETA."""

    def __init__(self, stream=None, every: float = PROGRESS_EVERY_S):
        self.stream = stream or sys.stderr
        self.every = every
        self.t0: float | None = None  # first call: template loading is not counted
        self.done0 = 0
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.t0 is None:
            self.t0, self.done0, self.last = now, done, now
        if done != total and now - self.last < self.every:
            return
        self.last = now
        el = max(now - self.t0, 1e-9)
        rate = (done - self.done0) / el
        eta = (total - done) / rate if rate > 0 else float("inf")
        self.stream.write(
            f"generate-lake: {done}/{total} ledgers ({100.0 * done / total:.1f}%), "
            f"{rate:.0f} ledgers/s, eta {eta:.0f}s\n"
        )
        self.stream.flush()


@click.group("dev")
def dev() -> None:
    """Developer tools: synthetic data lakes for tests, demos and benchmarks."""


@dev.command("generate-lake")
@click.option("--output", "output", required=True, type=click.Path(file_okay=False), help="Lake root directory.")
@click.option(
    "--first", type=click.IntRange(FIRST_LEDGER, MAX_GENERATED_LEDGER), required=True, help="First ledger (inclusive)."
)
@click.option(
    "--last", type=click.IntRange(FIRST_LEDGER, MAX_GENERATED_LEDGER), required=True, help="Last ledger (inclusive)."
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Deterministic seed.")
@click.option(
    "--tx-per-ledger",
    type=click.FloatRange(0.0, MAX_TX_PER_LEDGER),
    default=DEFAULT_TX_PER_LEDGER,
    show_default=True,
    help="Mean transactions per ledger (0.05 ... 1000; ~300 is like pubnet ranges 3-5).",
)
@click.option("--ledgers-per-batch", type=click.IntRange(1), default=1, show_default=True)
@click.option("--batches-per-partition", type=click.IntRange(1), default=64000, show_default=True)
@click.option("--network-passphrase", default=PUBNET_PASSPHRASE, show_default=True)
@click.option("--file-ext", type=click.Choice([".xdr.zst", ".xdr.zstd"]), default=".xdr.zst", show_default=True)
@click.option("--min-tx-bytes", type=click.IntRange(0), default=0, help="Only template txs at least this big.")
@click.option("--max-tx-bytes", type=click.IntRange(1), default=None, help="Only template txs at most this big.")
@click.option(
    "--templates-dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Directory of the real template ledgers (default: the copy shipped in the package).",
)
@click.option(
    "--lcm-version",
    type=click.Choice(["0", "1"]),
    default="1",
    show_default=True,
    help="LedgerCloseMeta version: 1 (protocol 21 skeleton) or 0 (protocol 19, classic txs only).",
)
@click.option("--fsync/--no-fsync", default=True, show_default=True, help="fsync every lake file.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def generate_lake_cmd(
    output,
    first,
    last,
    seed,
    tx_per_ledger,
    ledgers_per_batch,
    batches_per_partition,
    network_passphrase,
    file_ext,
    min_tx_bytes,
    max_tx_bytes,
    templates_dir,
    lcm_version,
    fsync,
    quiet,
) -> None:
    """Write a Galexie-layout data lake of realistic generated ledgers FIRST..LAST."""
    from .lakegen import generate_lake

    if last < first:
        raise click.BadParameter(f"--last {last} precedes --first {first}", param_hint="--last")
    from ..errors import LakeConfigError
    from ..sources import objstore

    try:  # the generator writes a directory: refuse a bucket URL rather than make a dir named "s3:"
        local = objstore.local_path(output)
    except LakeConfigError as e:
        raise click.BadParameter(str(e), param_hint="--output") from None
    if local is None:
        raise click.BadParameter(
            f"{output} is not a local directory; generate locally, then copy (e.g. aws s3 sync DIR {output})",
            param_hint="--output",
        )
    try:
        stats = generate_lake(
            local,
            first,
            last,
            seed=seed,
            tx_per_ledger=tx_per_ledger,
            ledgers_per_batch=ledgers_per_batch,
            batches_per_partition=batches_per_partition,
            network_passphrase=network_passphrase,
            file_ext=file_ext,
            progress=None if quiet else _Progress(),
            min_tx_bytes=min_tx_bytes,
            max_tx_bytes=max_tx_bytes,
            templates_dir=templates_dir,
            fsync=fsync,
            lcm_version=int(lcm_version),
        )
    except (ValueError, FileNotFoundError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(
        f"wrote {stats.ledgers} ledgers ({stats.first}-{stats.last}), {stats.transactions} transactions, "
        f"{stats.files} files, {stats.compressed_bytes} bytes (raw {stats.raw_bytes}) to {stats.root} "
        f"in {stats.seconds:.2f}s"
    )
