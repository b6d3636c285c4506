"""rpcbackfill.index"""
