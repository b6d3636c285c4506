"""Test helpers for the ledger sources: consecutive, hash-chained ledgers made from real ones.

The fixture ledgers carry scattered sequence numbers.  Sources and lakes need runs of
consecutive ledgers, so ``Resequencer`` takes real LedgerCloseMeta templates, finds (once,
with stellar-sdk as the XDR reference) where ``ledgerSeq``, ``previousLedgerHash`` and the
header-history ``hash`` live, and then patches those bytes for every new ledger:
``hash = sha256(LedgerHeader XDR)`` and ``previousLedgerHash`` = the hash of the ledger before,
so the chain is consistent the way stellar-core's is.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Iterator, Sequence

from .net import free_port


@dataclass(frozen=True)
class _Template:
    raw: bytes
    hash_off: int  # LedgerHeaderHistoryEntry.hash
    header_off: int  # LedgerHeader starts here
    header_len: int
    prev_off: int  # LedgerHeader.previousLedgerHash
    seq_off: int  # LedgerHeader.ledgerSeq


def _analyse(lcm: bytes) -> _Template:
    from stellar_sdk import xdr

    m = xdr.LedgerCloseMeta.from_xdr_bytes(lcm)
    if m.to_xdr_bytes() != lcm:
        raise ValueError("template does not round-trip through stellar-sdk")
    body = {0: m.v0, 1: m.v1, 2: m.v2}[m.v]
    # union discriminant (4); V1/V2 open with an extension union (4 bytes for v0, more for
    # LedgerCloseMetaExtV1) before ledgerHeader.
    hash_off = 4 if m.v == 0 else 4 + len(body.ext.to_xdr_bytes())
    header = body.ledger_header.header
    header_off = hash_off + 32
    header_len = len(header.to_xdr_bytes())
    prev_off = header_off + 4  # after ledgerVersion
    scp_len = len(header.scp_value.to_xdr_bytes())
    seq_off = prev_off + 32 + scp_len + 32 + 32  # scpValue, txSetResultHash, bucketListHash
    (seq,) = struct.unpack_from(">I", lcm, seq_off)
    if seq != header.ledger_seq.uint32:
        raise ValueError("ledgerSeq offset mismatch")
    if lcm[prev_off : prev_off + 32] != header.previous_ledger_hash.hash:
        raise ValueError("previousLedgerHash offset mismatch")
    return _Template(lcm, hash_off, header_off, header_len, prev_off, seq_off)


class Resequencer:
    """Produce consecutive ledgers ``first, first+1, ...`` cycling through ``templates``."""

    def __init__(self, templates: Sequence[bytes]):
        if not templates:
            raise ValueError("need at least one template ledger")
        self._t = [_analyse(t) for t in templates]

    def chain(self, first: int, count: int, prev_hash: bytes = b"\x00" * 32) -> Iterator[tuple[int, bytes]]:
        prev = prev_hash
        for i in range(count):
            t = self._t[(first + i) % len(self._t)]
            b = bytearray(t.raw)
            struct.pack_into(">I", b, t.seq_off, first + i)
            b[t.prev_off : t.prev_off + 32] = prev
            h = hashlib.sha256(b[t.header_off : t.header_off + t.header_len]).digest()
            b[t.hash_off : t.hash_off + 32] = h
            prev = h
            yield first + i, bytes(b)

    def ledgers(self, first: int, count: int) -> list[tuple[int, bytes]]:
        return list(self.chain(first, count))


def small_templates(fixture_ledgers, limit: int = 8, max_size: int = 10_000) -> list[bytes]:
    """A few small real ledgers covering every LedgerCloseMeta version present (V0, V1, V2)."""
    by_version: dict[int, list[bytes]] = {}
    for f in fixture_ledgers:
        if len(f.lcm) <= max_size:
            (v,) = struct.unpack_from(">I", f.lcm, 0)
            by_version.setdefault(v, []).append(f.lcm)
    out: list[bytes] = []
    # round-robin over versions so each appears early
    while len(out) < limit and any(by_version.values()):
        for v in sorted(by_version):
            if by_version[v] and len(out) < limit:
                out.append(by_version[v].pop(0))
    return out


# --- GCS emulator --------------------------------------------------------------------------


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
        exe = shutil.which("gcp-storage-emulator") or os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
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
                    raise RuntimeError("emulator did not start within 30 s")
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


# --- reference scanner (stellar-sdk) ---------------------------------------------------------


def lcm_impl():
    """The native scanner (``rpcbackfill.lcm``): part of every build, no fallback."""
    from rpcbackfill import lcm

    return lcm
