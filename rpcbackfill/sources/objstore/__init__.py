"""Object stores a data lake can live in, behind one small interface and one scheme table.

Every store exposes the same calls with the same error contract (``ObjectStore``):

- ``get(key) -> bytes``: the whole object, checked against the store's checksum when it
  offers one.  ``ObjectMissing`` when it does not exist (the source turns that into a fatal
  ``MissingLedgerError``); ``TransientSourceError`` for anything worth retrying (5xx, 429,
  SlowDown, timeouts, connection failures, truncated or corrupted bodies); ``SourceError``
  for the rest (access denied, no such bucket, bad requests).
- ``exists(key) -> bool``.
- ``list_keys(max_results, prefix="") -> list[str]``: the first ``max_results`` keys (all of
  them for None) that start with ``prefix``, in lexicographic order, relative to the lake root
  (used to detect the file extension, to check the layout, and by ``detect-gaps`` to list a
  partition).  It is also the reachability probe: it fails when the bucket or directory cannot
  be read.
- ``close()``; ``url`` (the lake root, for messages); ``tuning`` (what the store recommends
  to the download pipeline, e.g. a local directory wants few workers).

A location is ``scheme://...`` for a scheme in ``SCHEMES`` or a plain local path.  The
configuration validates locations with ``check_location``, the source opens them with
``open_store``; no other module knows a scheme.  Each store lives in its own module
(``local``, ``gcs``, ``s3``), imported only when used; the bucket stores (GCS, S3) share
``BucketStore`` (location, error locations, listing errors, the generic end of the error
classification, closing the SDK client).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

from ...errors import LakeConfigError, SourceError, TransientSourceError

log = logging.getLogger(__name__)

# Per-request timeouts of network stores (seconds).  Lake objects are at most a few MB, so a
# minute without progress means the connection is dead: retry it.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0


class ObjectMissing(Exception):
    """The object does not exist (internal; mapped to MissingLedgerError by the source)."""


@dataclass(frozen=True)
class StoreTuning:
    """What a store recommends to the download pipeline; None = no opinion."""

    max_workers: int | None = None
    max_buffer_bytes: int | None = None
    # Reads are cheap enough to make in the consumer's own thread (a local directory: a page-cache
    # copy), so a caller that runs beside other workers may ask for no download threads at all.
    inline_reads: bool = False


@dataclass(frozen=True)
class StoreOptions:
    """Settings for opening a store.  Each store reads the fields it understands."""

    pool_size: int = 10  # parallel requests the caller will make (HTTP connection pool size)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    anonymous: bool = False  # never look for credentials; unsigned/anonymous requests
    region: str | None = None  # S3: overrides AWS_REGION / the profile's region
    endpoint_url: str | None = None  # S3: overrides AWS_ENDPOINT_URL(_S3); for S3-compatible stores
    force_path_style: bool = False  # S3: https://host/bucket/key instead of https://bucket.host/key

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> StoreOptions:
        """Options from a ``BufferedStorageConfig`` (fields read by name), then ``overrides``."""
        kw: dict[str, Any] = {"pool_size": max(1, int(getattr(cfg, "num_workers", 10)))}
        for name in ("anonymous", "region", "endpoint_url", "force_path_style"):
            v = getattr(cfg, name, None)
            if v is not None:
                kw[name] = v
        kw.update(overrides)
        return cls(**kw)


@runtime_checkable
class ObjectStore(Protocol):
    url: str
    tuning: StoreTuning

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, max_results: int | None = 16, prefix: str = "") -> list[str]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Scheme:
    """One kind of location.  ``opener(url, options)`` builds the store (imports lazily)."""

    name: str  # URL scheme; "file" also covers plain paths
    form: str  # how the location is written, for messages and docs
    remote: bool
    options: tuple[str, ...]  # StoreOptions fields (beyond pool size and timeouts) it honours
    opener: Callable[[str, StoreOptions], ObjectStore]


def _open_local(url: str, options: StoreOptions) -> ObjectStore:
    from .local import LocalStore

    path = local_path(url)
    assert path is not None
    if not path.is_dir():
        raise LakeConfigError(f"bucket_path {url!r}: directory {path} does not exist")
    return LocalStore(path)


def _open_gcs(url: str, options: StoreOptions) -> ObjectStore:
    from .gcs import GcsStore

    return GcsStore(url, options=options)


def _open_s3(url: str, options: StoreOptions) -> ObjectStore:
    from .s3 import S3Store

    return S3Store(url, options=options)


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("gs", "gs://bucket/prefix", True, ("anonymous",), _open_gcs),
        Scheme("s3", "s3://bucket/prefix", True, ("anonymous", "region", "endpoint_url", "force_path_style"), _open_s3),
        Scheme("file", "file:///abs/path or a local path", False, (), _open_local),
    )
}


def accepted_forms() -> str:
    return ", ".join(s.form for s in SCHEMES.values())


def scheme_of(location: str) -> Scheme:
    """The ``Scheme`` of a location; ``LakeConfigError`` for an unknown scheme."""
    if "://" not in location:
        return SCHEMES["file"]
    name = location.split("://", 1)[0].lower()
    s = SCHEMES.get(name)
    if s is None:
        raise LakeConfigError(f"unsupported scheme in {location!r} (accepted: {accepted_forms()})")
    return s


def split_bucket(location: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``scheme://bucket/prefix``; the prefix ends with "/" unless empty."""
    u = urlparse(location)
    if not u.netloc or u.netloc != u.netloc.strip() or "@" in u.netloc:
        raise LakeConfigError(f"{location!r} must name a bucket: {scheme_of(location).form}")
    prefix = u.path.strip("/")
    return u.netloc, prefix + "/" if prefix else ""


def check_location(raw: str) -> str:
    """Validate a configured location; returns it normalised (remote roots lose trailing
    slashes).  Plain paths come back unchanged (the caller resolves relative ones).
    ``LakeConfigError`` says what is wrong."""
    s = scheme_of(raw)
    if s.name == "file":
        if "://" in raw and not raw.startswith("file:///"):
            raise LakeConfigError(f"file:// URLs must be absolute (file:///path), got {raw!r}")
        return raw
    split_bucket(raw)
    head, _, rest = raw.partition("://")
    return f"{head}://{rest.rstrip('/')}"


def local_path(location: str) -> Path | None:
    """The directory of a ``file://`` URL or plain path; None for a remote location."""
    if "://" not in location:
        return Path(location).expanduser()
    if scheme_of(location).name != "file":
        return None
    u = urlparse(location)
    if u.netloc not in ("", "localhost"):
        raise LakeConfigError(f"bucket_path {location!r}: file:// URLs must name a local path")
    return Path(unquote(u.path))


def open_store(location: str, options: StoreOptions | None = None) -> ObjectStore:
    """The store for a configured location (nothing is requested over the network yet)."""
    if not location:
        raise LakeConfigError("backfill.buffered_storage.bucket_path is empty")
    return scheme_of(location).opener(location, options or StoreOptions())


# --- shared error helpers -------------------------------------------------------------------

_DNS_HINTS = (
    "Name or service not known",
    "nodename nor servname",
    "Temporary failure in name resolution",
    "No address associated with hostname",
    "NameResolutionError",
    "getaddrinfo failed",
)


def network_cause(e: BaseException) -> str | None:
    """A short cause for a failure to reach a server (DNS, refused, timeout), or None.

    Looks through the exception, its causes and the text libraries wrap it in, so that
    messages name the cause instead of a library class."""
    seen: list[str] = []
    cur: BaseException | None = e
    for _ in range(8):
        if cur is None:
            break
        seen.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    text = " | ".join(seen)
    if any(h in text for h in _DNS_HINTS):
        return "DNS lookup failed"
    if "Connection refused" in text or "ConnectionRefusedError" in text:
        return "connection refused"
    if "timed out" in text or "Timeout" in text:
        return "timed out"
    if "Connection reset" in text or "RemoteDisconnected" in text or "Connection aborted" in text:
        return "connection reset"
    return None


def short(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def listing_error(err: Exception, url: str, bucket: str) -> Exception:
    """The error to raise for a failed bucket listing, given the classified one: a bare 404 on a
    listing means the bucket itself does not exist."""
    if isinstance(err, ObjectMissing):
        return SourceError(f"{url}: bucket {bucket} does not exist (HTTP 404)")
    return err


def close_client(client: Any, what: str, logger: logging.Logger) -> None:
    """Close an SDK client (drops its pooled HTTP connections); best effort, a failure is logged
    at debug level on the caller's logger."""
    try:
        client.close()
    except Exception as e:  # pragma: no cover - best effort
        logger.debug("closing the %s client failed: %s", what, e)


class BucketStore:
    """What the stores of ``scheme://bucket/prefix`` locations share.  A subclass sets
    ``client_name`` (for messages) and, once its SDK client exists, ``_client``, ``endpoint``
    and ``_own_client`` (close() closes only a client the store made), and maps SDK
    exceptions in ``_classify`` (falling back on ``_classify_other``)."""

    tuning = StoreTuning()
    client_name = "storage"
    endpoint = ""
    _client: Any = None
    _own_client = True

    def __init__(self, url: str):
        self.bucket_name, self.prefix = split_bucket(url)
        self.url = url

    def _where(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _classify(self, e: Exception, where: str) -> Exception:
        return self._classify_other(e, where)

    def _listing_failed(self, e: Exception, prefix: str) -> Exception:
        """The error for a failed listing under ``prefix`` (a bare 404 means no such bucket)."""
        err = self._classify(e, f"{self.url}/{prefix}" if prefix else self.url)
        return listing_error(err, self.url, self.bucket_name)

    @staticmethod
    def _classify_other(e: Exception, where: str) -> Exception:
        """The end of every classification: an OS-level transport failure is worth retrying,
        anything else the SDK raised is reported as unexpected."""
        if isinstance(e, (ConnectionError, TimeoutError, OSError)):
            return TransientSourceError(f"{where}: {type(e).__name__}: {short(e)}")
        return SourceError(f"{where}: unexpected {type(e).__name__}: {short(e)}")

    def close(self) -> None:
        if self._own_client and self._client is not None:
            close_client(self._client, self.client_name, log)
