"""rpcbackfill.sources"""
