"""A real S3 server for the tests: moto in server mode on 127.0.0.1, started in-process.

``MotoS3`` serves the S3 API on a free local port (``ThreadedMotoServer``); ``upload_lake``
copies a local lake into a bucket like ``aws s3 sync`` (objects and bucket public-read, as
an open-data lake); ``aws_env`` is an environment with no AWS credentials, profiles or
instance metadata (every lookup stays on this machine).
"""

from __future__ import annotations

import os
from pathlib import Path

# Keys the AWS chain reads; removed so a developer's own setup cannot leak into a test.
_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def aws_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Overrides making the AWS chain find nothing: no credentials, no profile, no IMDS."""
    env = {k: "" for k in _AWS_VARS}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
        AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_REGION="us-east-1",
    )
    env.update(extra)
    return env


def apply_env(monkeypatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        if v == "":
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)


def clean_environ(env: dict[str, str]) -> dict[str, str]:
    """``os.environ`` with ``env`` applied ("" removes a variable), for subprocesses."""
    out = {k: v for k, v in os.environ.items() if k not in env}
    out.update({k: v for k, v in env.items() if v != ""})
    return out


class MotoS3:
    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self.port = self._server._server.server_port  # the port the OS picked
        self.host = f"http://127.0.0.1:{self.port}"
        # moto keeps its buckets in process-wide memory, shared by every server of the process:
        # start empty (another test module may have run a server before)
        self.reset()

    def reset(self) -> None:
        """Drop every bucket (moto's own reset endpoint)."""
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.host}/moto-api/reset", method="POST"), timeout=30).close()

    def client(self, endpoint: str | None = None, *, checksums: bool = True):
        """A signed client (dummy credentials: moto accepts any) for setting buckets up.
        ``checksums=False`` uploads without a flexible checksum (like older or S3-compatible
        writers), so reads of those objects are checked by their MD5 ETag alone."""
        import boto3
        from botocore.config import Config

        extra = {} if checksums else {"request_checksum_calculation": "when_required"}
        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.host,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(s3={"addressing_style": "path"}, **extra),
        )

    def close(self) -> None:
        self.reset()
        self._server.stop()


def upload_lake(client, bucket: str, prefix: str, root: Path, *, public: bool = True, skip=()) -> int:
    """Copy the lake at ``root`` to ``s3://bucket/prefix``; returns the object count.
    ``skip``: relative paths not to upload (e.g. ".config.json")."""
    acl = {"ACL": "public-read"} if public else {}
    try:
        client.create_bucket(Bucket=bucket, **acl)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    todo = []
    for d, _, files in os.walk(root):
        for f in sorted(files):
            path = Path(d) / f
            rel = path.relative_to(root).as_posix()
            if rel not in skip:
                todo.append((f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel, path))

    def put(item) -> None:
        key, path = item
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), **acl)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:  # boto3 clients are thread-safe
        list(pool.map(put, todo))
    return len(todo)
