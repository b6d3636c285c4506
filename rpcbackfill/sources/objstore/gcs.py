"""``gs://bucket/prefix`` through google-cloud-storage.

Credentials: application-default credentials when available (and ``anonymous`` is not set),
anonymous access otherwise (public lakes).  ``STORAGE_EMULATOR_HOST`` is honoured by the
client library.  The library's own retries are disabled: the source retries with its
configured policy.
"""

from __future__ import annotations

import logging
import os

from ...errors import SourceError, TransientSourceError
from . import BucketStore, ObjectMissing, StoreOptions, network_cause, short

log = logging.getLogger(__name__)


class GcsStore(BucketStore):
    client_name = "GCS"

    def __init__(self, url: str, *, options: StoreOptions | None = None, client=None):
        options = options or StoreOptions()
        super().__init__(url)
        self.timeout = (options.connect_timeout, options.read_timeout)
        self._own_client = client is None
        self._client = client if client is not None else make_client(anonymous=options.anonymous)
        self.endpoint = str(getattr(getattr(self._client, "_connection", None), "API_BASE_URL", "") or "GCS")
        _size_connection_pool(self._client, options.pool_size)
        if self._own_client and getattr(self._client, "_bucket_metadata_cache", None) is not None:
            # Recent google-cloud-storage releases start a background thread per bucket that
            # fetches bucket metadata for tracing spans: an extra request we do not want
            # (it outlives close() and, for a public bucket read anonymously, is refused).
            self._client._bucket_metadata_cache = None
        self._bucket = self._client.bucket(self.bucket_name)

    def get(self, key: str) -> bytes:
        blob = self._bucket.blob(self.prefix + key)
        try:
            # md5 checking: catches bodies that were cut short or altered in transit
            return blob.download_as_bytes(timeout=self.timeout, retry=None, checksum="md5")
        except Exception as e:  # classified below; never leak library exception types
            raise self._classify(e, self._where(key)) from None

    def exists(self, key: str) -> bool:
        blob = self._bucket.blob(self.prefix + key)
        try:
            return blob.exists(timeout=self.timeout, retry=None)
        except Exception as e:
            raise self._classify(e, self._where(key)) from None

    def list_keys(self, max_results: int | None = 16, prefix: str = "") -> list[str]:
        full = self.prefix + prefix
        try:
            it = self._client.list_blobs(
                self.bucket_name, prefix=full, max_results=max_results, timeout=self.timeout, retry=None
            )
            return [b.name[len(self.prefix) :] for b in it]
        except Exception as e:
            raise self._listing_failed(e, prefix) from None

    def _classify(self, e: Exception, where: str) -> Exception:
        """Map a google-cloud-storage / transport exception to our error types."""
        from google.api_core import exceptions as gexc

        if isinstance(e, gexc.NotFound):
            if "bucket" in str(e).lower() and "does not exist" in str(e).lower():
                return SourceError(f"{where}: bucket {self.bucket_name} does not exist (HTTP 404)")
            return ObjectMissing(where)
        if isinstance(e, (gexc.Unauthorized, gexc.Forbidden)):
            return SourceError(f"{where}: access to bucket {self.bucket_name} denied (HTTP {e.code})")
        if isinstance(e, (gexc.TooManyRequests, gexc.ServerError, gexc.RequestRangeNotSatisfiable)):
            return TransientSourceError(f"{where}: HTTP {getattr(e, 'code', '?')} {short(e)}")
        if isinstance(e, gexc.GoogleAPICallError):
            return SourceError(f"{where}: HTTP {getattr(e, 'code', '?')} {short(e)}")
        cause = network_cause(e)
        if cause is not None:
            return TransientSourceError(f"{where}: cannot reach {self.endpoint}: {cause} ({type(e).__name__})")
        try:
            import requests

            if isinstance(e, requests.RequestException):
                return TransientSourceError(f"{where}: {type(e).__name__}: {short(e)}")
        except ImportError:  # pragma: no cover
            pass
        try:
            from google.resumable_media import common as rmc

            if isinstance(e, (rmc.DataCorruption, rmc.InvalidResponse)):
                return TransientSourceError(f"{where}: {type(e).__name__}: {short(e)}")
        except ImportError:  # pragma: no cover
            pass
        return self._classify_other(e, where)


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


def make_client(anonymous: bool = False):
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        # The emulator needs no credentials; a fixed project avoids a metadata-server lookup.
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="rpcbackfill", credentials=AnonymousCredentials())
    if anonymous:
        return storage.Client.create_anonymous_client()
    try:
        return storage.Client()
    except (DefaultCredentialsError, OSError):
        log.info("no Google credentials found; using anonymous access")
        return storage.Client.create_anonymous_client()
