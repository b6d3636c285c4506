"""Operator-side captive-core material for the tests: history archives (a directory with
``.well-known/stellar-history.json``, served as file:// or over HTTP on 127.0.0.1) and
stellar-core configuration files shaped like the ones operators run stellar-rpc with."""

from __future__ import annotations

import functools
import http.server
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FAKE_CORE = Path(__file__).resolve().parents[1] / "fake_stellar_core.py"
# the fake's "#!/usr/bin/env python3" must find this interpreter (with zstandard etc.)
CORE_ENV = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}


def make_archive(root: Path, latest: int, passphrase: str) -> Path:
    """A history archive whose latest checkpoint is ``latest`` (only its state file: the
    stand-in core reads the ledgers themselves from a lake)."""
    (root / ".well-known").mkdir(parents=True, exist_ok=True)
    state = {"version": 2, "server": "test archive", "currentLedger": latest, "networkPassphrase": passphrase}
    (root / ".well-known" / "stellar-history.json").write_text(json.dumps(state))
    return root


@contextmanager
def serve_dir(root: Path) -> Iterator[str]:
    """``root`` over HTTP on 127.0.0.1 (a thread); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def validator_key(i: int) -> str:
    from stellar_sdk import Keypair

    return Keypair.from_raw_ed25519_seed(bytes([i + 1]) * 32).public_key


def pubnet_shaped(history: str, *, orgs: int = 5, per_org: int = 3, extra: str = "", http_port: int = 11626) -> str:
    """A stellar-core file as operators keep for stellar-rpc: HOME_DOMAINS of HIGH quality and
    VALIDATORS with HISTORY (``history`` is the get-command template with ``{name}``), the
    ports and FAILURE_SAFETY of a real node, and no DATABASE / BUCKET_DIR_PATH.  Tests that run
    the stand-in on such a file directly pass ``http_port=0`` (or a free port): it listens there."""
    lines = [
        'NETWORK_PASSPHRASE = "Public Global Stellar Network ; September 2015"',
        f"HTTP_PORT = {http_port}",
        "PEER_PORT = 11725",
        "FAILURE_SAFETY = 1",
        extra,
    ]
    n = 0
    for o in range(orgs):
        lines += ["", "[[HOME_DOMAINS]]", f'HOME_DOMAIN = "org{o}.example"', 'QUALITY = "HIGH"']
    for o in range(orgs):
        for v in range(per_org):
            name = f"org{o}_{v}"
            lines += [
                "",
                "[[VALIDATORS]]",
                f'NAME = "{name}"',
                f'HOME_DOMAIN = "org{o}.example"',
                f'PUBLIC_KEY = "{validator_key(n)}"',
                f'ADDRESS = "core-{name}.org{o}.example:11625"',
                'HISTORY = "' + history.replace("{name}", name) + '"',
            ]
            n += 1
    return "\n".join(lines) + "\n"
