#!/usr/bin/env python3
"""A stand-in for stellar-core v23 that speaks the captive-core protocol of spec section 6 and
makes the start-up checks real stellar-core makes, so a configuration real core would refuse is
refused here too.

    fake_stellar_core.py version
    fake_stellar_core.py --conf CFG --console new-db
    fake_stellar_core.py --conf CFG --console catchup TO/COUNT --metadata-output-stream fd:3

Checks, with real core's messages (src/main/Config.cpp, Application.cpp, BucketManager.cpp,
HistoryArchiveManager.cpp, Database.cpp of stellar-core):

- the config is TOML; an entry real core does not know (tests/stellar_core_config_keys.txt,
  taken from its Config.cpp) is refused, except this stand-in's own ``FAKE_*``;
  ``NETWORK_PASSPHRASE`` is required;
- ``VALIDATORS`` entries need NAME, a valid PUBLIC_KEY, HOME_DOMAIN and a QUALITY (their own or
  their HOME_DOMAINS entry's); HIGH/CRITICAL ones need HISTORY and at least 3 per home domain;
- the generated quorum set has one inner set per home domain; ``FAILURE_SAFETY`` (default -1:
  computed as n - (n - (n-1)//3), i.e. 0 below 4 organisations) of 0 without
  ``UNSAFE_QUORUM = true`` is refused ("SCP unsafe"); no VALIDATORS and no QUORUM_SET is refused;
- new-db and catchup listen on ``HTTP_PORT`` (default 11626; 127.0.0.1 unless
  ``PUBLIC_HTTP_PORT``) for the process's life, like real core's command handler: two cores
  with one port fail ("bind: Address already in use"); ``HTTP_PORT = 0`` disables it;
- new-db and catchup take an exclusive flock on ``BUCKET_DIR_PATH``/stellar-core.lock (default
  ``buckets``, relative to the working directory) for the process's life;
- new-db creates ``DATABASE`` (``sqlite3://PATH``; the default ``sqlite3://:memory:`` keeps
  nothing); catchup without a database new-db created is refused;
- catchup needs a history archive (``[HISTORY.*] get`` or a validator's ``HISTORY``); it runs
  the first archive's get command for ``.well-known/stellar-history.json`` and refuses a target
  beyond that file's ``currentLedger``;
- log lines go to stderr (``--console``) and to ``LOG_FILE_PATH`` (default
  ``stellar-core-<datetime>.log`` in the working directory; ``""`` disables the file);
- ``version`` prints core's layout with ``ledger protocol version: FAKE_PROTOCOL`` (default 23).

Ledgers come from a local data lake, ``FAKE_LAKE`` (or a record-marked stream file,
``FAKE_STREAM``): catchup starts like real core at the checkpoint boundary at or before
``TO-COUNT+1`` (checkpoints every ``FAKE_CHECKPOINT`` ledgers, default 64), writes record-marked
frames to fd 3, and after ``TO`` waits for SIGINT.  ``FAKE_*`` settings (any of them, in the
cfg or -- overriding it -- the environment):

  FAKE_LAKE        path of the lake to serve
  FAKE_STREAM      a file of record-marked LedgerCloseMeta frames to serve instead
  FAKE_PID_FILE    write the catchup process id here
  FAKE_PROTOCOL    ledger protocol version reported by ``version`` (default 23)
  FAKE_FAILURE     early_exit | truncated_frame | truncated_header | gap | garbage_header |
                   bad_hash | ignore_sigint | exit_after_last | hang | newdb_fail
  FAKE_FAIL_AT     ledger where the failure happens (default: the middle of the stream)
  FAKE_CHECKPOINT  checkpoint frequency (default 64)
  FAKE_BARRIER     a directory: catchup, holding its bucket lock, waits there until
                   FAKE_BARRIER_N catchups (default 2) have arrived -- proof that that many cores
                   ran at the same time (refused after 180 s otherwise)
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

LOCK_NAME = "stellar-core.lock"
QUALITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
_log_file = None


def log(msg: str) -> None:
    line = f"fake-core[{os.getpid()}]: {msg}"
    print(line, file=sys.stderr, flush=True)
    if _log_file is not None:
        _log_file.write(f"{datetime.datetime.now().isoformat()} {line}\n")
        _log_file.flush()


class Refused(Exception):
    """A start-up check failed: real core prints the reason and exits 1."""


def read_cfg(path: str) -> dict:
    try:
        cfg = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise Refused(f"Failed to parse '{path}' :{e}") from None
    for k, v in os.environ.items():
        if k.startswith("FAKE_"):
            cfg[k] = v
    return cfg


def open_log(cfg: dict) -> None:
    global _log_file
    path = cfg.get("LOG_FILE_PATH", "stellar-core-{datetime:%Y-%m-%d_%H-%M-%S}.log")
    if path == "":
        return
    path = path.replace("{datetime:%Y-%m-%d_%H-%M-%S}", time.strftime("%Y-%m-%d_%H-%M-%S"))
    _log_file = open(path, "a")  # noqa: SIM115 - lives as long as the process


def strkey_ok(key: str) -> bool:
    try:
        from stellar_sdk import StrKey

        return StrKey.is_valid_ed25519_public_key(key)
    except ImportError:  # pragma: no cover
        return key.startswith("G") and len(key) == 56


def known_keys() -> frozenset[str]:
    lines = (HERE / "stellar_core_config_keys.txt").read_text().splitlines()
    return frozenset(x.strip() for x in lines if x.strip() and not x.startswith("#"))


def check_config(cfg: dict) -> None:
    """The start-up checks of real core's Config::load (see the module docstring)."""
    known = known_keys()
    for key in cfg:
        if key not in known and not key.startswith("FAKE_"):
            raise Refused(f"Unknown configuration entry: '{key}'")
    if not cfg.get("NETWORK_PASSPHRASE"):
        raise Refused("NETWORK_PASSPHRASE not configured")
    domains = {}
    for hd in cfg.get("HOME_DOMAINS", []):
        if hd.get("QUALITY") not in QUALITIES:
            raise Refused(f"malformed HOME_DOMAINS entry '{hd.get('HOME_DOMAIN')}' (bad quality)")
        domains[hd["HOME_DOMAIN"]] = hd["QUALITY"]
    orgs: dict[str, list[str]] = {}
    for v in cfg.get("VALIDATORS", []):
        name = v.get("NAME", "")
        for field in ("NAME", "PUBLIC_KEY", "HOME_DOMAIN"):
            if not v.get(field):
                raise Refused(f"malformed VALIDATORS entry '{name}' (missing {field})")
        if not strkey_ok(v["PUBLIC_KEY"]):
            raise Refused(f"invalid key '{v['PUBLIC_KEY']}' in VALIDATORS entry '{name}'")
        quality = v.get("QUALITY") or domains.get(v["HOME_DOMAIN"])
        if quality not in QUALITIES:
            raise Refused(f"malformed VALIDATORS entry '{name}' (missing quality)")
        if quality in ("HIGH", "CRITICAL") and not v.get("HISTORY"):
            raise Refused(f"malformed VALIDATORS entry '{name}' (critical and high quality must have an archive)")
        orgs.setdefault(v["HOME_DOMAIN"], []).append(quality)
    for domain, qs in orgs.items():
        if qs[0] in ("HIGH", "CRITICAL") and len(qs) < 3:
            raise Refused(f"Critical and High quality validators for '{domain}' must have redundancy of at least 3")
    if orgs:
        top = len(orgs)
    elif "QUORUM_SET" in cfg:
        qs = cfg["QUORUM_SET"]
        top = len(qs.get("VALIDATORS", [])) + sum(1 for x in qs.values() if isinstance(x, dict))
    else:
        top = 0
    if top == 0:
        raise Refused("no validators defined in VALIDATORS/QUORUM_SET")
    unsafe = cfg.get("UNSAFE_QUORUM", False) is True
    safety = cfg.get("FAILURE_SAFETY", -1)
    if safety == -1:
        safety = top - (top - (top - 1) // 3)
        log(f"Assigning calculated value of {safety} to FAILURE_SAFETY")
    if not unsafe and safety == 0:
        log("Can't have FAILURE_SAFETY=0 unless you also set UNSAFE_QUORUM=true. Be sure you know what you are doing!")
        raise Refused("SCP unsafe")


_http_socket = None


def listen_http(cfg: dict) -> None:
    """Real core's CommandHandler binds HTTP_PORT as the application starts (before new-db)."""
    global _http_socket
    import socket

    port = int(cfg.get("HTTP_PORT", 11626))
    if port == 0:
        return
    host = "0.0.0.0" if cfg.get("PUBLIC_HTTP_PORT", False) is True else "127.0.0.1"
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        s.listen()
    except OSError as e:
        s.close()
        raise Refused(f"bind: {e.strerror}") from None
    log(f"Listening on {host}:{port} for HTTP requests")
    _http_socket = s


def lock_buckets(cfg: dict) -> int:
    """Real core's BucketManager: exclusive, non-blocking flock held until the process exits."""
    d = Path(cfg.get("BUCKET_DIR_PATH", "buckets"))
    d.mkdir(parents=True, exist_ok=True)
    path = d / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o700)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise Refused(
            f"unable to flock file: {path} ({e.strerror}). This can be caused by access rights issues or "
            f"another stellar-core process already running"
        ) from None
    return fd


def database_path(cfg: dict) -> Path | None:
    db = cfg.get("DATABASE", "sqlite3://:memory:")
    if not db.startswith("sqlite3://"):
        raise Refused(f"unsupported DATABASE {db!r} in this stand-in")
    rest = db[len("sqlite3://") :]
    return None if rest == ":memory:" else Path(rest)


def archive_commands(cfg: dict) -> list[str]:
    out = [t["get"] for t in cfg.get("HISTORY", {}).values() if isinstance(t, dict) and t.get("get")]
    out += [v["HISTORY"] for v in cfg.get("VALIDATORS", []) if v.get("HISTORY")]
    return out


def archive_state(command: str) -> dict:
    """Run the archive's get command for its state file, as core does before a catchup."""
    local = Path(f"fake-core-has-{os.getpid()}.json")
    cmd = command.replace("{0}", ".well-known/stellar-history.json").replace("{1}", shlex.quote(str(local)))
    r = subprocess.run(cmd, shell=True, capture_output=True, check=False)
    if r.returncode != 0 or not local.exists():
        raise Refused(f"Could not download file: archive command '{cmd}' failed with code {r.returncode}")
    try:
        return json.loads(local.read_text())
    finally:
        local.unlink()


def wait_at_barrier(d: Path, n: int, timeout: float = 180.0) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{os.getpid()}.{os.getcwd().replace(os.sep, '_')}").write_text("")
    deadline = time.monotonic() + timeout
    while len(list(d.iterdir())) < n:
        if time.monotonic() > deadline:
            raise Refused(f"barrier: only {len(list(d.iterdir()))} of {n} catchups ran at the same time")
        time.sleep(0.02)
    log(f"barrier: {n} catchups running at the same time")


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


def version() -> int:
    proto = int(os.environ.get("FAKE_PROTOCOL", "23"))
    print(f"v{proto}.0.1-fake")
    print(f"ledger protocol version: {proto}")
    print("rust version: rustc 1.86.0 (05f9846f8 2025-03-31)")
    print("soroban-env-host versions: ")
    for i, p in enumerate((proto, proto - 1)):
        print(f"    host[{i}]:")
        print(f"        package version: {p}.0.0")
        print("        git version: 0000000000000000000000000000000000000000")
        print(f"        ledger protocol version: {p}")
        print("        pre-release version: 0")
    return 0


def usage(msg: str) -> int:
    log(f"usage error: {msg}; argv={sys.argv[1:]}")
    return 2


def main() -> int:
    a = sys.argv[1:]
    if a == ["version"]:
        return version()
    if len(a) < 4 or a[0] != "--conf" or a[2] != "--console":
        return usage("expected --conf CFG --console COMMAND")
    try:
        cfg = read_cfg(a[1])
        open_log(cfg)
        check_config(cfg)
        return run(cfg, a[3:])
    except Refused as e:
        log(f"Got an exception: {e}")
        return 1


def run(cfg: dict, cmd: list[str]) -> int:
    failure = cfg.get("FAKE_FAILURE", "")
    db = database_path(cfg)
    if cmd == ["new-db"]:
        listen_http(cfg)
        lock_buckets(cfg)
        log("creating database")
        if failure == "newdb_fail":
            log("simulated new-db failure: database is locked")
            return 3
        if db is not None:
            db.write_text("schema 1\n")
        return 0
    if len(cmd) != 4 or cmd[0] != "catchup" or cmd[2] != "--metadata-output-stream" or cmd[3] != "fd:3":
        return usage("expected catchup TO/COUNT --metadata-output-stream fd:3")
    listen_http(cfg)
    lock_buckets(cfg)
    if db is None or not db.exists():
        raise Refused("No DB schema version found, try stellar-core new-db")
    archives = archive_commands(cfg)
    if not archives:
        raise Refused("No GET-enabled history archive in config")
    to, count = (int(x) for x in cmd[1].split("/"))
    latest = archive_state(archives[0])["currentLedger"]
    if to > latest:
        raise Refused(f"Target ledger {to} is newer than the archive's latest checkpoint {latest}")
    first = to - count + 1
    cp = int(cfg.get("FAKE_CHECKPOINT", "64"))
    start = max(2, first // cp * cp)
    fail_at = int(cfg.get("FAKE_FAIL_AT") or (start + to) // 2)
    if "FAKE_PID_FILE" in cfg:
        Path(cfg["FAKE_PID_FILE"]).write_text(str(os.getpid()))
    if cfg.get("FAKE_BARRIER"):
        wait_at_barrier(Path(cfg["FAKE_BARRIER"]), int(cfg.get("FAKE_BARRIER_N", "2")))
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
    elif cfg.get("FAKE_LAKE"):
        ledgers = lake_ledgers(cfg["FAKE_LAKE"], start, to)
    else:
        raise Refused("stand-in: set FAKE_LAKE or FAKE_STREAM (cfg or environment)")
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
