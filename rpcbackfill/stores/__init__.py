"""rpcbackfill.stores"""
