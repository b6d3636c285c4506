"""rpcbackfill.orchestration"""
