"""Every error rpcbackfill raises on purpose, in one typed hierarchy, grouped by family.

Each class carries two decisions:

``exit_code``
    What the CLI exits with; it prints ``str(err)`` as one line on stderr -- never a traceback.
``retryable``
    Whether the coordinator may retry a range task that failed with it.  ``False`` for what a
    retry cannot fix: bad input or configuration, a full disk, corrupt or unreadable stores, a
    ledger missing from a bounded lake.  ``is_retryable`` extends the rule to exceptions that
    are not ours.

Library code raises the most specific class; callers catch the base class they can handle.

Exit codes (documented in README.md):
    0  success
    1  runtime failure (a range FAILED, a source or store error)
    2  invalid input (command line, configuration, data-directory mismatch)
    3  not found (query commands)
    4  data directory already in use by another process
    75 ``[backfill] max_duration`` elapsed; re-running continues (EX_TEMPFAIL)
    130/143  interrupted by SIGINT/SIGTERM (128 + signal number)
"""

from __future__ import annotations


class RpcBackfillError(Exception):
    """Base class of every deliberate rpcbackfill error."""

    exit_code = 1
    retryable = True


# --- input and configuration (exit 2, never retried) ---------------------------------------


class InputError(RpcBackfillError):
    """Bad input from the operator: flags, configuration, data-directory mismatch."""

    exit_code = 2
    retryable = False


class ConfigError(InputError):
    """One or more configuration problems; ``problems`` lists every one found."""

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class LedgerRangeError(InputError):
    """Start/end ledgers that violate the range rules of spec section 1-2."""


# --- environment and queries -------------------------------------------------------------


class NotFoundError(RpcBackfillError):
    """A query found nothing (e.g. transaction hash absent)."""

    exit_code = 3


class DataDirLockedError(RpcBackfillError):
    """Another process holds the data directory lock."""

    exit_code = 4


class EndpointError(RpcBackfillError):
    """An HTTP endpoint of the run (status, metrics) cannot listen on its address (exit 1)."""


class Cancelled(RpcBackfillError):
    """Work stopped because cancellation was requested (signal, shutdown)."""

    exit_code = 130


# --- outcomes of a whole run or check (raised by the commands, never inside a range task) --


class RangeFailedError(RpcBackfillError):
    """One or more ranges are FAILED (``status`` reports it with exit 1)."""


class MaxDurationElapsed(RpcBackfillError):
    """``[backfill] max_duration`` elapsed: the run stopped; re-running continues (EX_TEMPFAIL)."""

    exit_code = 75


class CheckFailedError(RpcBackfillError):
    """A check command (``verify``, ``detect-gaps``) found problems; its report is on stdout."""


# --- XDR -----------------------------------------------------------------------------------


class XdrError(RpcBackfillError, ValueError):
    """Malformed or unsupported XDR bytes (truncated, bad length, unknown union arm)."""


# --- ledger sources --------------------------------------------------------------------------


class SourceError(RpcBackfillError):
    """A ledger source failed."""


class TransientSourceError(SourceError):
    """A failure worth retrying (5xx, timeout, truncated body, corrupt zstd)."""


class CorruptDownloadError(TransientSourceError):
    """A downloaded object did not decode (bad zstd frame or malformed XDR); retried like any
    transient failure, counted apart (``source_retries_total{reason="corrupt"}``)."""


class CoreProcessError(SourceError):
    """Captive stellar-core exited early, or could not be started."""


class LedgerSequenceError(SourceError):
    """Ledgers arrived out of order, with a gap, or with a broken hash chain."""


class LedgerAuthError(SourceError):
    """An ingested ledger fails authentication against its own hashes: its header hash, the
    previous-ledger hash chain, or the transaction-set / result-set hash the header commits to.
    Not retried: the source serves the same bytes again.  The message names the ledger sequence
    and the hash that failed."""

    retryable = False


class MissingLedgerError(SourceError):
    """A ledger/object inside a bounded range does not exist: it stays missing."""

    retryable = False


class LakeConfigError(SourceError):
    """The data lake manifest is absent, malformed or contradicts the configuration, or the
    lake's location cannot be used.  Exit 1 like every source failure: it is found by reading
    the lake (pre-flight check or a range), not by validating the configuration file."""

    retryable = False


class SourceConfigError(SourceError):
    """A ledger source's own configuration is unusable (captive-core binary or cfg not set, or
    not an executable / readable file)."""

    exit_code = 2
    retryable = False


class CorePreflightError(SourceError):
    """Captive core cannot do the requested backfill, found before any range starts: stellar-core
    older than protocol 23, a range beyond the history archive's latest checkpoint, or an operator
    stellar-core file that is unreadable or sets a key the driver owns.  Exit 1 like every source
    failure; a retry cannot fix it."""

    retryable = False


# --- stores and indexes ----------------------------------------------------------------------


class StoreError(RpcBackfillError):
    """A store (LFS chunks, spill files, index shards, meta store) failed."""


class IndexBuildError(StoreError):
    """The RecSplit builder could not produce an index (after its derived-salt retries)."""


class CorruptStoreError(StoreError):
    """Stored bytes fail verification (bad index, bad checksum, wrong sequence)."""

    retryable = False


class UnsupportedFormatError(StoreError):
    """A file declares a format version this build does not understand."""

    retryable = False


class DiskFullError(StoreError):
    """No space left on device (ENOSPC/EDQUOT)."""

    retryable = False


class DuplicateKeyError(StoreError):
    """The same transaction hash was indexed twice."""

    retryable = False


class RepairError(StoreError):
    """A damaged or missing file of a COMPLETE range could not be repaired by ``--backfill``;
    the message says which files and what to do (exit 1)."""

    retryable = False


class MetaStoreError(StoreError):
    """The meta store is unreadable or inconsistent with the request."""

    retryable = False


def is_retryable(e: BaseException) -> bool:
    """May a range task that failed with ``e`` be retried?  Ours: the class's ``retryable``.
    An ``ImportError`` means a broken installation, which a retry cannot fix; any other
    unexpected exception (a bug, an OOM in a dependency) gets the benefit of the doubt."""
    if isinstance(e, RpcBackfillError):
        return e.retryable
    return not isinstance(e, ImportError)


# --- data integrity (issue 15) ---------------------------------------------------------------
# Damage is an error, never an answer: a query that meets damaged or missing stored data exits 1
# naming the file, never 3 ("not found") and never with a wrong result.  Not retryable (inherited).


class DataCorruptionError(CorruptStoreError):
    """Stored data that a finished (COMPLETE) range must hold is damaged: an index shard or chunk
    fails its checks, or a ledger read back is not the one asked for."""

    exit_code = 1


class MissingDataError(DataCorruptionError):
    """A file that a COMPLETE range must have (chunk .data/.index, index shard) is absent."""


class MetaStoreCorruptError(MetaStoreError):
    """The meta store exists but cannot be read (RocksDB corruption, failed checksum, I/O), or
    contradicts the data directory."""

    exit_code = 1
