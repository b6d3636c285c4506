"""Coordinator <-> orchestrator-process messages over a Unix socketpair (``SubprocessRunner``).

Frame: 4-byte big-endian length, then a pickled tuple.  Both ends are processes of the same
installation started by the coordinator, so pickle is safe here.  Payloads are the typed
objects of the executor seam (``executor``, ``updates``, ``progress``).

Orchestrator -> coordinator
    ("update", req_id, MetaUpdate)      apply a meta-store update; the orchestrator blocks until
                                        ("ack", req_id, None) or ("err", req_id, message)
    ("progress", ProgressSnapshot)      fire and forget
    ("log", record_fields)              a log record, re-emitted through the coordinator's handlers
    ("outcome", Outcome)                last message: done (after the ack of CompleteRange),
                                        failed or cancelled
Coordinator -> orchestrator
    ("start", WorkItem, options_dict)   first message (options: config, log_level, progress_every_s)
    ("ack" | "err", req_id, payload)
    ("stop", None)                      cancel promptly and exit
"""

from __future__ import annotations

import pickle
import socket
import struct

from ..errors import RpcBackfillError

_HDR = struct.Struct(">I")
MAX_FRAME = 64 << 20  # sanity bound: no message comes close (the config is the largest)


class ChannelClosed(RpcBackfillError):
    """The peer process closed its end (it exited or died)."""


class Channel:
    """Blocking framed messages over a connected stream socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buf = bytearray()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: tuple) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.sock.sendall(_HDR.pack(len(data)) + data)
        except OSError as e:
            raise ChannelClosed(f"peer closed the channel: {e}") from None

    def _frame(self) -> tuple | None:
        if len(self._buf) < 4:
            return None
        (n,) = _HDR.unpack_from(self._buf)
        if n > MAX_FRAME:
            raise ChannelClosed(f"protocol error: frame of {n} bytes")
        if len(self._buf) < 4 + n:
            return None
        data = bytes(self._buf[4 : 4 + n])
        del self._buf[: 4 + n]
        return pickle.loads(data)

    def recv(self) -> tuple:
        """Block until one whole message arrives (ChannelClosed on EOF)."""
        while True:
            m = self._frame()
            if m is not None:
                return m
            self._fill()

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(1 << 16)
        except OSError as e:
            raise ChannelClosed(f"peer closed the channel: {e}") from None
        if not chunk:
            raise ChannelClosed("peer closed the channel")
        self._buf += chunk

    def recv_ready(self) -> list[tuple]:
        """After select() said readable: read once, return every complete message (may be [])."""
        self._fill()
        out = []
        while (m := self._frame()) is not None:
            out.append(m)
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
