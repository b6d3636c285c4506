"""Test helpers for the ledger sources: the GCS emulator (a real google-cloud-storage server
running in memory) and copying a local lake into it."""

from __future__ import annotations

from .net import free_port


class Emulator:
    """gcp-storage-emulator running in memory as a subprocess on a free 127.0.0.1 port."""

    def __init__(self):
        import os
        import shutil
        import subprocess
        import sys
        import time

        self.port = free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        exe = shutil.which("gcp-storage-emulator") or os.path.join(
            os.path.dirname(sys.executable), "gcp-storage-emulator"
        )
        self.proc = subprocess.Popen(
            [exe, "start", "--host", "127.0.0.1", "--port", str(self.port), "--in-memory", "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        import socket

        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("emulator did not start within 30 s") from None
                time.sleep(0.05)

    def client(self, host: str | None = None):
        """A storage client talking to ``host`` (default: the emulator itself)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": host or self.host}
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()


def upload_lake(client, bucket: str, prefix: str, root) -> int:
    """Copy a local lake (``root``) to ``gs://bucket/prefix`` like ``gsutil rsync``; returns files."""
    import os

    try:
        b = client.create_bucket(bucket)
    except Exception:
        b = client.bucket(bucket)
    n = 0
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            rel = os.path.relpath(path, root)
            name = f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel
            b.blob(name).upload_from_filename(path)
            n += 1
    return n
