"""The commands README.md lists after ``make demo`` work as written, from a fresh shell.

A demo-like directory is built in a temporary directory: ``config/demo.toml`` copied verbatim,
a lake generated with the demo's seed (but few transactions per ledger, to stay small) in
``demo-data/lake``, and ``.venv/bin/stellar-rpc`` running this checkout; the demo's backfill
command then runs, and every line of README's post-demo block runs through ``bash`` in that
directory.  The one data-dependent value, the transaction hash, is swapped for a hash of the
same ledger of the small lake; that README's own hash is in that ledger of the real demo lake
is checked separately by generating that single ledger with the Makefile's parameters.

Also here: the query errors speak about ranges and their states (exit 3), and ``status`` exits 1
when a range is FAILED.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rpcbackfill import lcm
from tests.lib import REPO

README = REPO / "README.md"
MARKER = "<!-- post-demo commands:"
SERVE_MARKER = "<!-- serve commands:"


def readme_commands(marker: str = MARKER) -> list[str]:
    """The shell commands of the README block after ``marker`` (continuation lines joined)."""
    text = README.read_text()
    assert marker in text, f"README lost its command block {marker!r}"
    block = text.split(marker, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    out, cur = [], ""
    for line in block.splitlines():
        if line.endswith("\\"):
            cur += line[:-1].strip() + " "
            continue
        if (cur + line).strip():
            out.append((cur + line).strip())
        cur = ""
    return out


def makefile_demo_params() -> tuple[int, float, str]:
    """(seed, tx per ledger, the backfill arguments) of `make demo`, read from the Makefile."""
    mk = (REPO / "Makefile").read_text()
    seed = int(re.search(r"generate-lake .*--seed (\d+)", mk, re.DOTALL).group(1))
    tx = float(re.search(r"^DEMO_TX_PER_LEDGER \?= ([\d.]+)", mk, re.MULTILINE).group(1))
    backfill = re.search(r"\$\(RPC\) (--backfill .*)$", mk, re.MULTILINE).group(1)
    return seed, tx, backfill.replace("$(DEMO_CONFIG)", "config/demo.toml")


def run(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLAR_RPC_")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A directory laid out like the repository after ``make demo`` (small lake)."""
    root = tmp_path_factory.mktemp("demo")
    (root / "config").mkdir()
    shutil.copy(REPO / "config" / "demo.toml", root / "config" / "demo.toml")
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    exe = venv_bin / "stellar-rpc"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} -m rpcbackfill "$@"\n')
    exe.chmod(0o755)
    seed, _, backfill = makefile_demo_params()
    r = run(
        f".venv/bin/stellar-rpc dev generate-lake --output demo-data/lake --first 2 --last 20001 --seed {seed} "
        "--tx-per-ledger 1 --no-fsync --quiet",
        root,
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    r = run(f".venv/bin/stellar-rpc {backfill}", root)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    return root


def test_readme_hash_is_in_the_demo_lake():
    """README's transaction hash belongs to README's ledger in the lake `make demo` generates."""
    from rpcbackfill.devtools.lakegen import generate_ledgers

    seed, tx, _ = makefile_demo_params()
    [cmd] = [c for c in readme_commands() if "get-transaction-by-hash" in c]
    want = bytes.fromhex(cmd.split("get-transaction-by-hash", 1)[1].split()[0])
    seq = int(re.search(r"get-ledger-by-sequence (\d+)", "\n".join(readme_commands())).group(1))
    [(_, raw)] = list(generate_ledgers(seq, seq, seed=seed, tx_per_ledger=tx))
    got_seq, hashes = lcm.tx_hashes(raw)
    assert got_seq == seq and want in lcm.iter_hashes(hashes)
    # the serve block asks for the same transaction
    serve_hashes = re.findall(r'"hash":"([0-9a-f]{64})"', "\n".join(readme_commands(SERVE_MARKER)))
    assert serve_hashes == [want.hex()]


def test_readme_post_demo_commands_work_as_written(demo):
    cmds = readme_commands()
    assert len(cmds) >= 6
    assert all(c.startswith(".venv/bin/stellar-rpc ") for c in cmds)
    assert all("--config-path config/demo.toml" in c for c in cmds)
    # the small lake's own first transaction of the README's ledger stands in for README's hash
    seq = int(re.search(r"get-ledger-by-sequence (\d+)", "\n".join(cmds)).group(1))
    from rpcbackfill.stores.lfs import LedgerStore

    with LedgerStore(demo / "demo-data/data/immutable/ledgers") as store:
        _, hashes = lcm.tx_hashes(store.get_ledger(seq))
    assert hashes, f"ledger {seq} of the test lake has no transaction; pick another seed"
    seen = set()
    for cmd in cmds:
        m = re.search(r"#\s*exit (\d+)", cmd)
        want_rc = int(m.group(1)) if m else 0
        line = re.sub(r"get-transaction-by-hash [0-9a-f]{64}", f"get-transaction-by-hash {hashes[:32].hex()}", cmd)
        r = run(line, demo)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        assert r.returncode == want_rc, f"{cmd}\nexit {r.returncode}\n{err[-2000:]}"
        verb = cmd.split()[1]
        seen.add(verb)
        if verb == "status":
            assert "ranges: 2 COMPLETE" in out  # the summary line: both ranges done
        elif verb == "get-ledger-by-sequence" and want_rc == 0 and "--base64" in cmd:
            assert lcm.ledger_sequence(base64.b64decode(out)) == seq
        elif verb == "get-ledger-by-sequence" and want_rc == 0:
            target = cmd.split(">", 1)[1].split()[0]
            assert lcm.ledger_sequence((demo / target).read_bytes()) == seq
        elif verb == "get-transaction-by-hash":
            assert json.loads(out) == {"ledger_sequence": seq}
        elif verb == "verify" and "--json" in cmd:
            rep = json.loads(out)
            assert rep["clean"] and all(r["ledgers_compared"] == 10_000 for r in rep["ranges"])
        elif verb == "verify":
            assert "clean: every check passed" in out
        elif verb == "detect-gaps":
            assert "none missing" in out
        if want_rc == 3:
            assert re.fullmatch(
                r"error: ledger \d+ is not in this data directory: range \d+ \(ledgers \d+-\d+\) "
                r"has not been backfilled\n",
                err.splitlines(keepends=True)[-1],
            )
    assert {"status", "get-ledger-by-sequence", "get-transaction-by-hash", "verify", "detect-gaps"} <= seen


def test_query_errors_name_the_range_state_and_status_fails_on_failed(demo, tmp_path):
    """A range recorded as INGESTING / FAILED in the meta store: queries say so (exit 3), status exits 1."""
    from rpcbackfill.meta.store import MetaStore, RangeState

    shutil.copytree(demo / "config", tmp_path / "config")
    shutil.copytree(demo / ".venv", tmp_path / ".venv", symlinks=True)
    data = tmp_path / "demo-data" / "data"
    shutil.copytree(demo / "demo-data" / "data", data)
    (tmp_path / "demo-data" / "lake").mkdir()
    meta = MetaStore(data / "meta" / "rocksdb")
    try:
        meta.init_backfill(2, 30001, 10_000)  # extends the scope: range 2 is PENDING
        meta.start_ingesting(2, str(data / "active" / "txhash" / "0002"))
    finally:
        meta.close()
    r = run(".venv/bin/stellar-rpc get-ledger-by-sequence 25000 --base64 --config-path config/demo.toml", tmp_path)
    assert r.returncode == 3
    assert r.stderr.decode().splitlines()[-1] == (
        "error: ledger 25000 is not in this data directory: range 2 (ledgers 20002-30001) is INGESTING"
    )
    r = run(".venv/bin/stellar-rpc get-transaction-by-hash " + "ab" * 32 + " --config-path config/demo.toml", tmp_path)
    assert r.returncode == 3
    assert "is not in this data directory (searched COMPLETE ranges 0, 1; range 2 is INGESTING)" in r.stderr.decode()
    r = run(".venv/bin/stellar-rpc status --config-path config/demo.toml", tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    meta = MetaStore(data / "meta" / "rocksdb")
    try:
        meta.set_range_state(2, RangeState.FAILED, error="missing object in the lake")
    finally:
        meta.close()
    r = run(".venv/bin/stellar-rpc status --config-path config/demo.toml", tmp_path)
    assert r.returncode == 1
    assert "FAILED" in r.stdout.decode()
    assert r.stderr.decode().splitlines()[-1] == (
        "error: 1 range FAILED (range 2: missing object in the lake); re-run the backfill to resume"
    )
    # a ledger of a deleted chunk in a COMPLETE range is damage (exit 1, issue 15) naming the files,
    # and points at verify
    for ext in ("data", "index"):
        (data / f"immutable/ledgers/chunks/0000/000001.{ext}").unlink()
    r = run(".venv/bin/stellar-rpc get-ledger-by-sequence 12345 --base64 --config-path config/demo.toml", tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "ledger 12345 of COMPLETE range 1 is missing" in err and "000001.data" in err and "stellar-rpc verify" in err


def test_readme_serve_commands_work_as_written(demo, tmp_path):
    """The serve block: server in the background, the curl calls, ``kill %1``.  Only the port
    differs (a free one, so tests running side by side never clash) and the hash (as above)."""
    import signal
    import time

    from tests.lib.net import free_port

    cmds = readme_commands(SERVE_MARKER)
    assert cmds[0].startswith(".venv/bin/stellar-rpc serve ") and cmds[0].endswith("&")
    assert "--config-path config/demo.toml" in cmds[0] and cmds[-1] == "kill %1"
    curls = cmds[1:-1]
    assert curls and all(c.startswith("curl -s localhost:8000 ") for c in curls)
    seq = 12345
    from rpcbackfill.stores.lfs import LedgerStore

    with LedgerStore(demo / "demo-data/data/immutable/ledgers") as store:
        _, hashes = lcm.tx_hashes(store.get_ledger(seq))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLAR_RPC_")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["STELLAR_RPC_SERVICE_ENDPOINT"] = f"127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as errf:
        proc = subprocess.Popen(
            ["bash", "-c", "exec " + cmds[0].rstrip("&").strip()],
            cwd=demo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errf,
        )
    try:
        deadline = time.monotonic() + 120  # a safety net for a broken server, not a timing assertion
        while "JSON-RPC listening on" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "server never said it was listening"
            time.sleep(0.1)
        seen = set()
        for cmd in curls:
            line = cmd.replace("localhost:8000", f"127.0.0.1:{port}")
            line = re.sub(r'"hash":"[0-9a-f]{64}"', f'"hash":"{hashes[:32].hex()}"', line)
            r = run(line, demo)
            assert r.returncode == 0, r.stderr.decode()
            reply = json.loads(r.stdout)
            assert "error" not in reply, reply
            res = reply["result"]
            if '"getLedgers"' in cmd:
                seen.add("getLedgers")
                assert res["ledgers"][0]["sequence"] == 2
            elif '"getTransaction"' in cmd:
                seen.add("getTransaction")
                assert res["txHash"] == hashes[:32].hex() and res["ledger"] == seq
        assert seen == {"getLedgers", "getTransaction"}
    finally:
        proc.send_signal(signal.SIGTERM)  # what `kill %1` sends
        proc.wait(timeout=60)
