"""``s3://bucket/prefix`` through boto3 (AWS S3 and S3-compatible stores: MinIO, R2, Ceph).

Configuration follows the standard AWS chain: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``, the shared config and credentials
files, environment credentials, instance roles.  ``StoreOptions.region`` / ``endpoint_url`` /
``force_path_style`` override the chain.  Requests are unsigned (anonymous) when
``anonymous`` is set or when no credentials are found (public lakes, e.g. the AWS open-data
copy of the pubnet lake).

botocore's own retries are disabled (one attempt per call): the source retries with its
configured policy.  Reads are checked twice: botocore validates the flexible checksum
(CRC32/CRC64/SHA) when the store returns one, and a plain-MD5 ETag (single-part uploads
without KMS encryption) is compared with the body's MD5 here; a short body is caught by the
Content-Length check.
"""

from __future__ import annotations

import hashlib
import logging
import re

from ...errors import SourceError, TransientSourceError
from . import BucketStore, ObjectMissing, StoreOptions, network_cause, short

log = logging.getLogger(__name__)

_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')
# Error codes S3 (and compatible stores) use for "try again later".
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequests",
        "RequestTimeTooSkewed",
        "OperationAborted",
    }
)
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AccountProblem",
        "Forbidden",
        "Unauthorized",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Store(BucketStore):
    client_name = "S3"

    def __init__(self, url: str, *, options: StoreOptions | None = None, client=None):
        self.options = options = options or StoreOptions()
        super().__init__(url)
        self._client = client if client is not None else make_client(options)
        self.endpoint = str(self._client.meta.endpoint_url)

    def get(self, key: str) -> bytes:
        where = self._where(key)
        try:
            r = self._client.get_object(Bucket=self.bucket_name, Key=self.prefix + key)
            body = r["Body"].read()
        except Exception as e:  # classified below; never leak library exception types
            raise self._classify(e, where) from None
        want = r.get("ContentLength")
        if want is not None and want != len(body):
            raise TransientSourceError(f"{where}: body cut short ({len(body)} of {want} bytes)")
        m = _MD5_ETAG.match(r.get("ETag") or "")
        if m and r.get("ServerSideEncryption") != "aws:kms" and hashlib.md5(body).hexdigest() != m.group(1).lower():
            raise TransientSourceError(f"{where}: MD5 of the body does not match the ETag (corrupted in transit)")
        return body

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket_name, Key=self.prefix + key)
            return True
        except Exception as e:
            err = self._classify(e, self._where(key))
            if isinstance(err, ObjectMissing):
                return False
            raise err from None

    def list_keys(self, max_results: int | None = 16, prefix: str = "") -> list[str]:
        full = self.prefix + prefix
        out: list[str] = []
        token: str | None = None
        while True:  # S3 returns at most 1,000 keys per call
            want = 1000 if max_results is None else min(1000, max_results - len(out))
            kw = {"Bucket": self.bucket_name, "Prefix": full, "MaxKeys": want}
            if token:
                kw["ContinuationToken"] = token
            try:
                r = self._client.list_objects_v2(**kw)
            except Exception as e:
                raise self._listing_failed(e, prefix) from None
            out.extend(o["Key"][len(self.prefix) :] for o in r.get("Contents", ()))
            token = r.get("NextContinuationToken")
            if not r.get("IsTruncated") or not token or (max_results is not None and len(out) >= max_results):
                return out

    def _classify(self, e: Exception, where: str) -> Exception:
        """Map a botocore / transport exception to our error types."""
        from botocore import exceptions as bexc

        if isinstance(e, bexc.ClientError):
            err = e.response.get("Error", {}) or {}
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            detail = f"HTTP {status}" + (f" {code}" if code and code != str(status) else "")
            if code == "NoSuchBucket":
                return SourceError(f"{where}: bucket {self.bucket_name} does not exist ({detail})")
            if code in _MISSING_CODES or (status == 404 and not code):
                return ObjectMissing(where)
            if status in (401, 403) or code in _DENIED_CODES:
                return SourceError(f"{where}: access to bucket {self.bucket_name} denied ({detail})")
            if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
                return TransientSourceError(f"{where}: {detail} {short(e)}")
            if status == 301 or code == "PermanentRedirect":
                return SourceError(f"{where}: bucket {self.bucket_name} is in another region; set region ({detail})")
            return SourceError(f"{where}: {detail} {short(e)}")
        if isinstance(e, (bexc.NoCredentialsError, bexc.PartialCredentialsError)):
            return SourceError(f"{where}: AWS credentials incomplete: {short(e)}")
        cause = network_cause(e)
        if isinstance(e, bexc.HTTPClientError) or cause is not None:
            return TransientSourceError(
                f"{where}: cannot reach {self.endpoint}: {cause or type(e).__name__} ({short(e)})"
            )
        transient = tuple(
            c
            for c in (
                getattr(bexc, n, None)
                for n in ("IncompleteReadError", "ResponseStreamingError", "FlexibleChecksumError", "ReadTimeoutError")
            )
            if c is not None
        )
        if isinstance(e, transient):
            return TransientSourceError(f"{where}: {type(e).__name__}: {short(e)}")
        try:
            from urllib3.exceptions import HTTPError as Urllib3Error

            if isinstance(e, Urllib3Error):
                return TransientSourceError(f"{where}: {type(e).__name__}: {short(e)}")
        except ImportError:  # pragma: no cover
            pass
        return self._classify_other(e, where)


def make_client(options: StoreOptions):
    """An S3 client from the AWS chain plus ``options``; unsigned when anonymous or without
    credentials."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session()
    unsigned = options.anonymous
    if not unsigned:
        try:
            creds = session.get_credentials()
        except Exception as e:  # a broken profile: say so, then read anonymously
            log.warning("AWS credentials could not be loaded (%s); using anonymous requests", short(e))
            creds = None
        if creds is None:
            log.info("no AWS credentials found; using anonymous (unsigned) S3 requests")
            unsigned = True
    cfg = BotoConfig(
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(10, options.pool_size),
        s3={"addressing_style": "path" if options.force_path_style else "auto"},
        signature_version=UNSIGNED if unsigned else None,
    )
    kw = {}
    if options.region:
        kw["region_name"] = options.region
    if options.endpoint_url:
        kw["endpoint_url"] = options.endpoint_url
    return session.client("s3", config=cfg, **kw)
