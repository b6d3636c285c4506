#!/usr/bin/env python3
"""A stand-in for stellar-core that speaks the captive-core protocol of spec section 6.

    fake_stellar_core.py --conf CFG --console new-db
    fake_stellar_core.py --conf CFG --console catchup TO/COUNT --metadata-output-stream fd:3

It serves ledgers from a local data lake (``FAKE_LAKE`` in the cfg), starting like real core
at the checkpoint boundary at or before ``TO-COUNT+1`` (checkpoints every ``FAKE_CHECKPOINT``
ledgers, default 64), writes record-marked frames to fd 3, and after ``TO`` waits for
SIGINT.  Cfg keys (stellar-core's cfg is TOML; unknown keys are ignored):

  FAKE_LAKE        path of the lake to serve (required for catchup unless FAKE_STREAM is set)
  FAKE_STREAM      instead of a lake, a file of record-marked LedgerCloseMeta frames (what core
                   itself would write) to serve from (benchmarks: no decoding in the fake)
  FAKE_DB          marker file created by new-db and required by catchup (default fake-core.db)
  FAKE_PID_FILE    write the catchup process id here
  FAKE_FAILURE     early_exit | truncated_frame | truncated_header | gap | garbage_header |
                   bad_hash | ignore_sigint | exit_after_last | hang | newdb_fail
  FAKE_FAIL_AT     ledger where the failure happens (default: the middle of the stream)
  FAKE_CHECKPOINT  checkpoint frequency (default 64)

Any of them can also be given as an environment variable of the same name (overrides the cfg).
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def log(msg: str) -> None:
    print(f"fake-core[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def read_cfg(path: str) -> dict[str, str]:
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("[") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip().strip('"')
    for k in list(out) + [k for k in os.environ if k.startswith("FAKE_")]:
        if k in os.environ and k.startswith("FAKE_"):
            out[k] = os.environ[k]
    return out


def usage(msg: str) -> None:
    log(f"usage error: {msg}; argv={sys.argv[1:]}")
    sys.exit(2)


def lake_ledgers(lake: str, first: int, last: int):
    """(seq, lcm) for first..last from a local lake (layout from its manifest)."""
    from tests.lib.lake import lake_ledgers as read_lake

    return read_lake(lake, first, last)


def stream_ledgers(path: str, first: int, last: int):
    """(seq, lcm) for first..last from a record-marked stream file (sequence read from the header)."""
    from rpcbackfill import lcm
    from tests.lib.records import iter_record_marked

    with open(path, "rb") as f:
        for m in iter_record_marked(f):
            seq = lcm.ledger_sequence(m)
            if seq > last:
                return
            if seq >= first:
                yield seq, m


def main() -> int:
    a = sys.argv[1:]
    if len(a) < 4 or a[0] != "--conf" or a[2] != "--console":
        usage("expected --conf CFG --console COMMAND")
    cfg = read_cfg(a[1])
    failure = cfg.get("FAKE_FAILURE", "")
    db = Path(cfg.get("FAKE_DB", "fake-core.db"))
    cmd = a[3:]
    if cmd == ["new-db"]:
        log("creating database")
        if failure == "newdb_fail":
            log("simulated new-db failure: database is locked")
            return 3
        db.write_text("ok\n")
        return 0
    if len(cmd) != 4 or cmd[0] != "catchup" or cmd[2] != "--metadata-output-stream" or cmd[3] != "fd:3":
        usage("expected catchup TO/COUNT --metadata-output-stream fd:3")
    if not db.exists():
        log("database not initialised (run new-db first)")
        return 1
    to, count = (int(x) for x in cmd[1].split("/"))
    first = to - count + 1
    cp = int(cfg.get("FAKE_CHECKPOINT", "64"))
    start = max(2, first // cp * cp)
    fail_at = int(cfg.get("FAKE_FAIL_AT") or (start + to) // 2)
    if "FAKE_PID_FILE" in cfg:
        Path(cfg["FAKE_PID_FILE"]).write_text(str(os.getpid()))
    stopping = {"sigint": False}

    def on_sigint(signum, frame):
        if failure == "ignore_sigint":
            log("ignoring SIGINT")
            return
        stopping["sigint"] = True

    signal.signal(signal.SIGINT, on_sigint)
    log(f"catchup {to}/{count}: replaying from checkpoint, first ledger {start}")
    if failure == "hang":
        log("hanging before streaming")
        while not stopping["sigint"]:
            time.sleep(0.01)
        log("interrupted")
        return 0
    out = os.fdopen(3, "wb", buffering=0)
    if cfg.get("FAKE_STREAM"):
        ledgers = stream_ledgers(cfg["FAKE_STREAM"], start, to)
    else:
        ledgers = lake_ledgers(cfg["FAKE_LAKE"], start, to)
    for seq, lcm in ledgers:
        if stopping["sigint"]:
            log("interrupted")
            return 0
        if seq == fail_at:
            if failure == "early_exit":
                log(f"simulated crash before ledger {seq}")
                return 7
            if failure == "truncated_frame":
                out.write(struct.pack(">I", 0x80000000 | len(lcm)) + lcm[: len(lcm) // 2])
                log(f"simulated crash in the middle of ledger {seq}")
                return 9
            if failure == "truncated_header":
                out.write(struct.pack(">I", 0x80000000 | len(lcm))[:2])
                return 9
            if failure == "gap":
                log(f"skipping ledger {seq}")
                continue
            if failure == "garbage_header":
                out.write(struct.pack(">I", len(lcm)) + lcm)  # record mark bit missing
                continue
            if failure == "bad_hash":
                from rpcbackfill import lcm as scanner

                prev_off = lcm.index(scanner.header_hashes(lcm)[1])  # header.previousLedgerHash
                b = bytearray(lcm)
                b[prev_off] ^= 0xFF
                lcm = bytes(b)
        out.write(struct.pack(">I", 0x80000000 | len(lcm)) + lcm)
    log(f"caught up to ledger {to}")
    if failure == "exit_after_last":
        out.close()
        return 0
    deadline = time.monotonic() + 120  # never linger forever if nobody stops us
    while not stopping["sigint"] and time.monotonic() < deadline:
        time.sleep(0.01)
    log("shutting down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
