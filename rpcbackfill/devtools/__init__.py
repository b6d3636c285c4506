"""rpcbackfill.devtools"""
