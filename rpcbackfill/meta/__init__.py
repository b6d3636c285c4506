"""rpcbackfill.meta"""
