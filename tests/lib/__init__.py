"""Helpers of the test suite (not tests themselves; their own checks live in tests/test_testlib.py).

* ``fixtures``       the real ledgers of tests/fixtures/ with their expected hashes
* ``oracle``         stellar-sdk decoding: the independent reference the product is compared with
* ``ledgers``        consecutive, hash-chained ledgers from the product's own generator
                     (rpcbackfill.devtools.lakegen)
* ``records``        record-marked LedgerCloseMeta streams (what captive core writes on fd 3)
* ``lake``           reading a local data lake through rpcbackfill.sources.layout
* ``net``            free 127.0.0.1 ports
* ``lfs``            LFS chunk helpers and the session fixtures of the LFS tests
* ``sources``        the GCS emulator and lake upload
* ``gcs_fault_proxy`` an HTTP proxy that injects faults between a storage client (GCS or S3) and its server
                     (``TRANSIENT_FAULTS``: the faults a source must retry through)
* ``s3``             moto's S3 server on 127.0.0.1, lake upload, an AWS environment without credentials
* ``orchestration``  coordinator runs in their own process group, result checks; the
                     ``stellar-rpc --backfill`` subprocess (config file, command line,
                     environment, ``LoggedBackfill``) and ``poll_until``
* ``serve``          a backfilled data directory, ``stellar-rpc serve`` in a process or a thread,
                     its command line
* ``core``           captive core: history archives, operator stellar-core files, the stand-in's path
* ``lcm_support``    grammar-driven random XDR for the scanner tests
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"  # provenance: tests/fixtures/README.md
