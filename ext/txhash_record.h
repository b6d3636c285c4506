/* The txhash spill/sorted record shared by ext/_spill.pyx and ext/_recsplit.pyx.
 *
 * One record is a 32-byte transaction hash followed by the ledger sequence as uint32
 * little-endian; records are routed to one of 16 shards by the hash's first hex digit.
 * The Python side declares the same values in rpcbackfill/records.py; rpcbackfill.index
 * checks at import that both native modules agree with it. */
#ifndef RPCBACKFILL_TXHASH_RECORD_H
#define RPCBACKFILL_TXHASH_RECORD_H

#define RB_HASH_SIZE 32
#define RB_RECORD_SIZE 36 /* RB_HASH_SIZE + 4-byte ledger sequence */
#define RB_NSHARDS 16     /* shard = hash[0] >> 4 */

#endif
