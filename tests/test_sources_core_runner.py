"""CoreRunner / CoreProcess / core_version: the process side of captive core, with small shell
scripts standing in for stellar-core."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from rpcbackfill.errors import Cancelled, CoreProcessError
from rpcbackfill.sources.core_runner import CoreRunner, core_version
from tests.lib.procs import wait_gone


def script(tmp_path: Path, body: str, name: str = "core.sh") -> Path:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return p


def runner(tmp_path: Path, body: str) -> CoreRunner:
    (tmp_path / "work").mkdir(exist_ok=True)
    return CoreRunner(script(tmp_path, body), tmp_path / "work" / "stellar-core.cfg", tmp_path / "work")


def test_run_passes_conf_console_and_working_directory(tmp_path):
    r = runner(tmp_path, 'echo "$@" > args.txt; pwd > cwd.txt\n')
    r.run("new-db", timeout=60, cancel=threading.Event())
    work = tmp_path / "work"
    assert (work / "args.txt").read_text().split() == ["--conf", str(work / "stellar-core.cfg"), "--console", "new-db"]
    assert Path((work / "cwd.txt").read_text().strip()).resolve() == work.resolve()


def test_run_failure_carries_exit_code_and_output_tail(tmp_path):
    r = runner(tmp_path, 'echo "line one"; echo "database is locked" >&2; exit 3\n')
    with pytest.raises(
        CoreProcessError, match=r"new-db exited with code 3: output tail: line one \| database is locked"
    ):
        r.run("new-db", timeout=60, cancel=threading.Event())


def test_run_timeout_kills_the_process_group(tmp_path):
    # the script's child (sleep) is in core's process group: it goes too
    r = runner(tmp_path, "sleep 60 &\necho $! > child.pid\nwait\n")
    with pytest.raises(CoreProcessError, match="did not finish within 0 s"):
        r.run("new-db", timeout=0.2, cancel=threading.Event())
    child = int((tmp_path / "work" / "child.pid").read_text())
    assert wait_gone(child, 10)


def test_run_cancelled(tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="new-db cancelled"):
        runner(tmp_path, "sleep 60\n").run("new-db", timeout=60, cancel=cancel)


def test_start_missing_binary(tmp_path):
    r = CoreRunner(tmp_path / "absent", tmp_path / "c.cfg", tmp_path)
    with pytest.raises(CoreProcessError, match="cannot start"):
        r.start("new-db")


def test_start_with_meta_pipe_and_signal(tmp_path):
    r = runner(tmp_path, "trap 'exit 0' INT\nprintf 'abc' >&3\nwhile :; do sleep 0.05; done\n")
    p = r.start("catchup", "10/5", "--metadata-output-stream", "fd:3", meta_pipe=True)
    try:
        import os

        assert p.meta_fd is not None and os.read(p.meta_fd, 3) == b"abc"
        p.signal_group(signal.SIGINT)
        assert p.wait(30) == 0
    finally:
        if p.returncode is None:
            p.kill()
        p.join()
        p.close_meta()


def test_core_version(tmp_path):
    v23 = script(
        tmp_path,
        'echo "v23.0.1"\necho "ledger protocol version: 23"\necho "    host[0]:"\n'
        'echo "        ledger protocol version: 22"\n',
        "v23.sh",
    )
    assert core_version(v23) == ("v23.0.1", 23)
    nothing = script(tmp_path, 'echo "v19.0.0"\n', "old.sh")
    with pytest.raises(CoreProcessError, match="reports no ledger protocol version: v19.0.0"):
        core_version(nothing)
    failing = script(tmp_path, 'echo "boom" >&2; exit 4\n', "fail.sh")
    with pytest.raises(CoreProcessError, match=r"exit code 4\) reports no ledger protocol version: boom"):
        core_version(failing)
    with pytest.raises(CoreProcessError, match="cannot run"):
        core_version(tmp_path / "absent")
