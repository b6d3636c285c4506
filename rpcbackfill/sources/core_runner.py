"""Spawning, watching and stopping stellar-core processes (the part of captive core that is
about processes, not ledgers; stellar/go keeps the same split in its core runner).

``CoreRunner(binary, conf, work_dir)`` runs ``<binary> --conf <conf> --console <args>`` with
``work_dir`` as the working directory.  Every child

- runs in its own process group (stopping core also stops whatever it started, e.g. the
  ``curl`` of a history download);
- gets ``PR_SET_PDEATHSIG = SIGKILL`` (``rpcbackfill.procutil``).  Linux ties that signal to
  the *thread* that forked, so each child is spawned by a dedicated thread that then waits for
  it: the signal fires exactly when our process dies, never earlier;
- has stdout and stderr merged, drained line by line into ``tail`` (for error messages) and
  the DEBUG log;
- optionally gets the write end of a pipe as fd 3 (``--metadata-output-stream fd:3``); the read
  end is ``CoreProcess.meta_fd``, enlarged to 1 MiB so core is not throttled by 64 KiB.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from ..errors import Cancelled, CoreProcessError
from ..procutil import set_parent_death_signal
from .base import POLL_S

log = logging.getLogger(__name__)

# Linux fcntl: resize a pipe.
F_SETPIPE_SZ = 1031
META_PIPE_BYTES = 1 << 20
META_FD = 3
# Lines of core output kept for error messages.
TAIL_LINES = 40
# How long to wait for the helper threads of an exited child (they end with its pipes).
THREAD_JOIN_S = 5.0


class CoreProcess:
    """One running stellar-core child (see the module docstring)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None, *, meta_pipe: bool):
        self.argv = argv
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.meta_fd: int | None = None
        self.proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._spawn(cwd, env, meta_pipe)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once exited (negative: killed by that signal), else None."""
        return None if self.proc is None else self.proc.poll()

    def _spawn(self, cwd: Path, env: dict[str, str] | None, meta_pipe: bool) -> None:
        wfd = None
        if meta_pipe:
            self.meta_fd, wfd = os.pipe()
            try:
                fcntl.fcntl(self.meta_fd, F_SETPIPE_SZ, META_PIPE_BYTES)
            except OSError:
                pass
        error: list[BaseException] = []
        ready = threading.Event()
        preexec = _child_setup(wfd, os.getpid())

        def spawn_and_wait() -> None:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    cwd=str(cwd),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    pass_fds=(META_FD,) if wfd is not None else (),
                    preexec_fn=preexec,  # noqa: PLW1509 - only os/prctl calls, see _child_setup
                    env=env,
                )
            except OSError as e:
                error.append(CoreProcessError(f"cannot start {self.argv[0]}: {e.strerror or e}"))
                return
            finally:
                if wfd is not None:
                    os.close(wfd)
                if not self.proc:
                    ready.set()
            out = threading.Thread(target=self._drain_output, name="core-output", daemon=True)
            out.start()
            self._threads.append(out)
            ready.set()
            self.proc.wait()  # this thread is the child's PDEATHSIG parent: it lives as long as the child

        t = threading.Thread(target=spawn_and_wait, name=f"core-{_command_of(self.argv)}", daemon=True)
        self._threads.append(t)
        t.start()
        ready.wait()
        if error:
            self.close_meta()
            raise error[0]

    def _drain_output(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            log.debug("core[%d]: %s", proc.pid, line)
        proc.stdout.close()

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to core's process group (to core alone if the group is gone)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Exit status, or None if still running after ``timeout`` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int:
        """SIGKILL the process group and reap core."""
        self.signal_group(signal.SIGKILL)
        assert self.proc is not None
        return self.proc.wait()

    def join(self) -> None:
        """Wait for the spawner and output threads (after core exited: output fully collected)."""
        for t in self._threads:
            t.join(THREAD_JOIN_S)

    def close_meta(self) -> None:
        if self.meta_fd is not None:
            try:
                os.close(self.meta_fd)
            except OSError:
                pass
            self.meta_fd = None

    def output_tail(self, lines: int = 10) -> str:
        kept = [line for line in self.tail if line.strip()]
        return "output tail: " + " | ".join(kept[-lines:]) if kept else "no output"


def _command_of(argv: list[str]) -> str:
    return argv[4] if len(argv) > 4 else "run"


def _child_setup(wfd: int | None, parent_pid: int):
    def setup() -> None:  # runs in the child between fork and exec: keep it minimal
        os.setpgid(0, 0)
        # The driver stops core with SIGINT; a backfill started in the background of a
        # non-interactive shell inherits SIGINT as ignored, and exec keeps it ignored.
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        except ValueError:  # not the main thread: keep the inherited disposition
            pass
        set_parent_death_signal(parent_pid)  # exits at once if the parent is already gone
        if wfd is not None:
            if wfd != META_FD:
                os.dup2(wfd, META_FD)
            else:
                os.set_inheritable(META_FD, True)

    return setup


class CoreRunner:
    """Runs stellar-core commands with one configuration file in one working directory."""

    def __init__(self, binary: Path, conf: Path, work_dir: Path, env: dict[str, str] | None = None):
        self.binary = binary
        self.conf = conf
        self.work_dir = work_dir
        self.env = env

    def argv(self, *args: str) -> list[str]:
        return [str(self.binary), "--conf", str(self.conf), "--console", *args]

    def start(self, *args: str, meta_pipe: bool = False) -> CoreProcess:
        argv = self.argv(*args)
        log.info("captive core: %s (in %s)", " ".join(argv), self.work_dir)
        return CoreProcess(argv, self.work_dir, self.env, meta_pipe=meta_pipe)

    def run(self, *args: str, timeout: float, cancel: threading.Event) -> None:
        """Run a command to completion; ``CoreProcessError`` unless it exits 0."""
        p = self.start(*args)
        deadline = time.monotonic() + timeout
        while p.wait(POLL_S) is None:
            if cancel.is_set():
                p.kill()
                p.join()
                raise Cancelled(f"captive core {args[0]} cancelled")
            if time.monotonic() > deadline:
                p.kill()
                p.join()
                raise CoreProcessError(f"stellar-core {args[0]} did not finish within {timeout:.0f} s")
        p.join()
        if p.returncode != 0:
            raise CoreProcessError(f"stellar-core {args[0]} exited with code {p.returncode}: {p.output_tail()}")


_PROTOCOL_LINE = re.compile(r"^\s*ledger protocol version:\s*(\d+)\s*$", re.MULTILINE)


def core_version(binary: Path, env: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[str, int]:
    """(build version line, ledger protocol version) from ``<binary> version``.

    The first ``ledger protocol version:`` line is core's own; later ones describe the
    Soroban hosts it embeds."""
    try:
        r = subprocess.run(
            [str(binary), "version"],
            capture_output=True,
            timeout=timeout,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise CoreProcessError(f"{binary} version did not answer within {timeout:.0f} s") from None
    except OSError as e:
        raise CoreProcessError(f"cannot run {binary} version: {e.strerror or e}") from None
    text = r.stdout.decode(errors="replace")
    first = text.strip().splitlines()[0] if text.strip() else ""
    m = _PROTOCOL_LINE.search(text)
    if r.returncode != 0 or m is None:
        detail = (text + r.stderr.decode(errors="replace")).strip().replace("\n", " | ")[:300]
        raise CoreProcessError(
            f"{binary} version (exit code {r.returncode}) reports no ledger protocol version: {detail or 'no output'}"
        )
    return first, int(m.group(1))
