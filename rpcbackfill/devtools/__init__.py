"""rpcbackfill.devtools: developer tools (``stellar-rpc dev ...``).

* ``lakegen``: realistic, hash-consistent synthetic ledgers and Galexie data lakes
  (``generate_ledgers``, ``generate_lake``), templated from real pubnet ledgers.
* ``templates``: the slow path that cuts real ledgers into byte templates (stellar-sdk).
* ``cli``: the ``dev`` click group (``generate-lake``).

Kept import-light: submodules are imported on use.
"""
