"""Every error rpcbackfill raises on purpose, in one typed hierarchy.

The CLI maps each class to an exit code (``exit_code``) and prints ``str(err)`` as one
line on stderr -- never a traceback.  Library code raises the most specific class;
callers catch the base class they can handle.

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


# --- input and configuration ------------------------------------------------------------


class InputError(RpcBackfillError):
    """Bad input from the operator: flags, configuration, data-directory mismatch."""

    exit_code = 2


class ConfigError(InputError):
    """One or more configuration problems; ``problems`` lists every one found."""

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class LedgerRangeError(InputError):
    """Start/end ledgers that violate the range rules of spec section 1-2."""


class NotImplementedFeatureError(RpcBackfillError):
    """A command whose implementation has not landed yet."""

    exit_code = 1


class NotFoundError(RpcBackfillError):
    """A query found nothing (e.g. transaction hash absent)."""

    exit_code = 3


class DataDirLockedError(RpcBackfillError):
    """Another process holds the data directory lock."""

    exit_code = 4


class Cancelled(RpcBackfillError):
    """Work stopped because cancellation was requested (signal, shutdown)."""

    exit_code = 130


# --- XDR ---------------------------------------------------------------------------------


class XdrError(RpcBackfillError, ValueError):
    """Malformed or unsupported XDR bytes (truncated, bad length, unknown union arm)."""


# --- ledger sources ------------------------------------------------------------------------


class SourceError(RpcBackfillError):
    """A ledger source failed."""


class TransientSourceError(SourceError):
    """A failure worth retrying (5xx, timeout, truncated body, corrupt zstd)."""


class MissingLedgerError(SourceError):
    """A ledger/object inside a bounded range does not exist. Fatal, never retried."""


class LakeConfigError(SourceError):
    """The data lake manifest is absent, malformed or contradicts the configuration."""

    exit_code = 2


class CoreProcessError(SourceError):
    """Captive stellar-core exited early, or could not be started."""


class LedgerSequenceError(SourceError):
    """Ledgers arrived out of order, with a gap, or with a broken hash chain."""


class LedgerAuthError(SourceError):
    """An ingested ledger fails authentication against its own hashes: its header hash, the
    previous-ledger hash chain, or the transaction-set / result-set hash the header commits to.
    Fatal: the source serves the same bytes again, so a retry cannot help.  The message names
    the ledger sequence and the hash that failed."""

    retryable = False


# --- stores and indexes ----------------------------------------------------------------------


class StoreError(RpcBackfillError):
    """A store (LFS chunks, spill files, index shards, meta store) failed."""


class CorruptStoreError(StoreError):
    """Stored bytes fail verification (bad index, bad checksum, wrong sequence)."""


class UnsupportedFormatError(StoreError):
    """A file declares a format version this build does not understand."""


class DiskFullError(StoreError):
    """No space left on device (ENOSPC/EDQUOT). Not retried."""


class DuplicateKeyError(StoreError):
    """The same transaction hash was indexed twice."""


class IndexBuildError(StoreError):
    """The RecSplit builder could not produce an index."""


class MetaStoreError(StoreError):
    """The meta store is unreadable or inconsistent with the request."""


class RangeFailedError(RpcBackfillError):
    """One or more ranges ended FAILED."""


class MaxDurationElapsed(RpcBackfillError):
    """``[backfill] max_duration`` elapsed: the run stopped; re-running continues (EX_TEMPFAIL)."""

    exit_code = 75


class CheckFailedError(RpcBackfillError):
    """A check command (``verify``, ``detect-gaps``) found problems; its report is on stdout."""


class SourceConfigError(SourceError):
    """A ledger source's own configuration is unusable (captive-core binary or cfg missing,
    cfg passphrase contradicting the configured network)."""

    exit_code = 2
