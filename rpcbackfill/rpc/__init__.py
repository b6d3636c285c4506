"""``stellar-rpc serve``: stellar-rpc's JSON-RPC read methods over the immutable stores.

* ``ledger``  -- ``LedgerView``: one decoded LedgerCloseMeta (offsets from the native mapper
  ``rpcbackfill._txmap``), transactions matched to their envelopes by hash;
* ``reader``  -- ``HistoryReader``: the COMPLETE ranges of a data directory (meta store read
  only, refreshed), chunk files and RecSplit shards mapped once;
* ``methods`` -- the JSON-RPC methods (request validation, response shapes);
* ``server``  -- the aiohttp application and ``serve(config)``.
"""
