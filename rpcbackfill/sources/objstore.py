"""Object stores a data lake can live in: a local directory or a GCS bucket prefix.

Both expose the same three calls with the same error contract:

- ``get(key) -> bytes``: the whole object.  ``ObjectMissing`` when it does not exist (the
  caller turns that into a fatal ``MissingLedgerError``); ``TransientSourceError`` for
  anything worth retrying (5xx, 429, timeouts, connection resets, truncated bodies);
  ``SourceError`` for the rest (permissions, bad requests).
- ``exists(key) -> bool``.
- ``list_keys(max_results, prefix="") -> list[str]``: the first ``max_results`` keys (all of
  them for None) that start with ``prefix``, in lexicographic order, relative to the lake
  root (used to detect the file extension, and by ``detect-gaps`` to list a partition).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import LakeConfigError, SourceError, TransientSourceError

log = logging.getLogger(__name__)

# Per-request timeout for GCS (seconds): (connect, read-between-bytes).  Lake objects are at
# most a few MB, so a minute without progress means the connection is dead: retry it.
DEFAULT_GCS_TIMEOUT = (10.0, 60.0)


class ObjectMissing(Exception):
    """The object does not exist (internal; mapped to MissingLedgerError by the source)."""


class LocalStore:
    """A lake copied to a local directory (e.g. with ``gsutil rsync``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.url = str(self.root)

    def get(self, key: str) -> bytes:
        path = self.root / key
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except (PermissionError, IsADirectoryError) as e:
            raise SourceError(f"cannot read lake object {path}: {e.strerror}") from None
        except OSError as e:  # EIO, ESTALE on network filesystems...: worth another try
            raise TransientSourceError(f"I/O error reading lake object {path}: {e.strerror or e}") from None

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def list_keys(self, max_results: int | None = 16, prefix: str = "") -> list[str]:
        out: list[str] = []
        # walk only the directory the prefix names (a key's "/" are directory separators)
        head = prefix.rpartition("/")[0]
        top = self.root / head if head else self.root
        if not top.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            for f in sorted(filenames):
                key = f if rel == "." else f"{rel}/{f}"
                if not key.startswith(prefix):
                    continue
                out.append(key)
                if max_results is not None and len(out) >= max_results:
                    return out
        return out

    def close(self) -> None:
        pass


class GcsStore:
    """``gs://bucket/prefix`` through google-cloud-storage.

    Credentials: application-default credentials when available, anonymous access
    otherwise (public lakes).  ``STORAGE_EMULATOR_HOST`` is honoured by the client library.
    The library's own retries are disabled: the source retries with its configured policy.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float | tuple[float, float] = DEFAULT_GCS_TIMEOUT,
        client=None,
        pool_size: int = 10,
    ):
        u = urlparse(url)
        if u.scheme != "gs" or not u.netloc:
            raise LakeConfigError(f"bucket_path {url!r} is not a gs://bucket/prefix URL")
        self.url = url
        self.bucket_name = u.netloc
        prefix = u.path.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.timeout = timeout
        self._own_client = client is None
        self._client = client if client is not None else _make_client()
        _size_connection_pool(self._client, pool_size)
        if self._own_client and getattr(self._client, "_bucket_metadata_cache", None) is not None:
            # Recent google-cloud-storage releases start a background thread per bucket that
            # fetches bucket metadata for tracing spans: an extra request we do not want
            # (it outlives close() and, for a public bucket read anonymously, is refused).
            self._client._bucket_metadata_cache = None
        self._bucket = self._client.bucket(self.bucket_name)

    def _name(self, key: str) -> str:
        return self.prefix + key

    def get(self, key: str) -> bytes:
        blob = self._bucket.blob(self._name(key))
        try:
            # md5 checking: catches bodies that were cut short or altered in transit
            return blob.download_as_bytes(timeout=self.timeout, retry=None, checksum="md5")
        except Exception as e:  # classified below; never leak library exception types
            raise _classify(e, f"gs://{self.bucket_name}/{self._name(key)}") from None

    def exists(self, key: str) -> bool:
        blob = self._bucket.blob(self._name(key))
        try:
            return blob.exists(timeout=self.timeout, retry=None)
        except Exception as e:
            raise _classify(e, f"gs://{self.bucket_name}/{self._name(key)}") from None

    def list_keys(self, max_results: int | None = 16, prefix: str = "") -> list[str]:
        full = self.prefix + prefix
        try:
            it = self._client.list_blobs(
                self.bucket_name, prefix=full, max_results=max_results, timeout=self.timeout, retry=None
            )
            return [b.name[len(self.prefix) :] for b in it]
        except Exception as e:
            raise _classify(e, f"gs://{self.bucket_name}/{full}") from None

    def close(self) -> None:
        if not self._own_client:
            return
        try:
            self._client.close()  # drops pooled HTTP connections
        except Exception as e:  # pragma: no cover - best effort
            log.debug("closing the GCS client failed: %s", e)


def _size_connection_pool(client, n: int) -> None:
    """Let ``n`` download threads keep their HTTP connections (requests pools 10 by default,
    so 200 workers would reconnect on almost every request).  Best effort."""
    if n <= 10:
        return
    try:
        from requests.adapters import HTTPAdapter

        http = client._http  # the requests session the client uses
        for scheme in ("https://", "http://"):
            http.mount(scheme, HTTPAdapter(pool_connections=4, pool_maxsize=n))
    except Exception as e:  # pragma: no cover - depends on library internals
        log.debug("could not resize the GCS connection pool: %s", e)


def _make_client():
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        # The emulator needs no credentials; a fixed project avoids a metadata-server lookup.
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="rpcbackfill", credentials=AnonymousCredentials())
    try:
        return storage.Client()
    except (DefaultCredentialsError, OSError):
        log.info("no Google credentials found; using anonymous access")
        return storage.Client.create_anonymous_client()


def _classify(e: Exception, where: str) -> Exception:
    """Map a google-cloud-storage / transport exception to our error types."""
    from google.api_core import exceptions as gexc

    if isinstance(e, gexc.NotFound):
        return ObjectMissing(where)
    if isinstance(e, (gexc.TooManyRequests, gexc.ServerError, gexc.RequestRangeNotSatisfiable)):
        return TransientSourceError(f"{where}: HTTP {getattr(e, 'code', '?')} {_short(e)}")
    if isinstance(e, gexc.GoogleAPICallError):
        return SourceError(f"{where}: HTTP {getattr(e, 'code', '?')} {_short(e)}")
    try:
        import requests

        if isinstance(e, requests.RequestException):
            return TransientSourceError(f"{where}: {type(e).__name__}: {_short(e)}")
    except ImportError:  # pragma: no cover
        pass
    try:
        from google.resumable_media import common as rmc

        if isinstance(e, (rmc.DataCorruption, rmc.InvalidResponse)):
            return TransientSourceError(f"{where}: {type(e).__name__}: {_short(e)}")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(e, (ConnectionError, TimeoutError, OSError)):
        return TransientSourceError(f"{where}: {type(e).__name__}: {_short(e)}")
    return SourceError(f"{where}: unexpected {type(e).__name__}: {_short(e)}")


def _short(e: Exception) -> str:
    s = " ".join(str(e).split())
    return s[:300]


def open_store(bucket_path: str, **gcs_kwargs):
    """``LocalStore`` or ``GcsStore`` for a configured ``bucket_path``."""
    if not bucket_path:
        raise LakeConfigError("backfill.buffered_storage.bucket_path is empty")
    if bucket_path.startswith("gs://"):
        return GcsStore(bucket_path, **gcs_kwargs)
    if bucket_path.startswith("file://"):
        u = urlparse(bucket_path)
        if u.netloc not in ("", "localhost"):
            raise LakeConfigError(f"bucket_path {bucket_path!r}: file:// URLs must name a local path")
        path = unquote(u.path)
    elif "://" in bucket_path:
        raise LakeConfigError(f"bucket_path {bucket_path!r}: unsupported scheme (use gs://, file:// or a path)")
    else:
        path = bucket_path
    p = Path(path).expanduser()
    if not p.is_dir():
        raise LakeConfigError(f"bucket_path {bucket_path!r}: directory {p} does not exist")
    return LocalStore(p)
