/*
 * recsplit_core.h -- RecSplit minimal perfect hashing kernels for rpcbackfill's txhash index.
 *
 * Algorithm: E. Esposito, T. Mueller Graf, S. Vigna, "RecSplit: Minimal Perfect Hashing via
 * Recursive Splitting", ALENEX 2020 (arXiv:1910.06416).  This is our own implementation of the
 * published algorithm; the on-disk layout is ours (docs/recsplit-format.md).
 *
 * Outline (paper section 3):
 *   - keys are hashed into buckets of expected size RS_BUCKET_SIZE;
 *   - each bucket is split recursively: a node holding m keys searches for the smallest seed x
 *     such that hash(key, x) distributes its keys into parts of prescribed sizes; leaves
 *     (m <= RS_LEAF) search for a seed that maps their keys bijectively onto [0, m);
 *   - the seeds (minus a per-level start offset) are Golomb-Rice coded: the fixed low bits of
 *     every node of a bucket come first (preorder), then the unary high parts (preorder), so a
 *     whole subtree can be skipped in O(1) for the fixed part and by counting ones for unary;
 *   - the cumulative key count and bit position of every bucket are Elias-Fano coded.
 *   The position of a key is (keys in earlier buckets) + (offset inside its bucket).
 *
 * Hashing.  Keys are 32-byte transaction hashes (SHA-256), i.e. already uniform, but an
 * attacker can grind transactions so that their hashes share chosen bit patterns.  All hashes
 * used here are therefore *keyed* by 64-bit salts derived from the whole shard's content (stored
 * in the file header): the attacker cannot know the salt when the transactions are created, so he
 * cannot aim keys at one bucket or make them collide.  The mixer reads all 256 bits of the key
 * (the first hex digit, fixed within a shard, is simply a constant input and costs nothing).
 * The mixer is not a cryptographic PRF; the worst an attacker who beat it could cause is a
 * slower build or a salt retry, never a wrong answer (the caller confirms hits by reading the
 * ledger, spec section 8).
 */
#ifndef RPCBACKFILL_RECSPLIT_CORE_H
#define RPCBACKFILL_RECSPLIT_CORE_H

#if defined(__x86_64__) && defined(__GNUC__)
/* hardware popcount (x86-64-v2, every x86 server since 2008); without it GCC calls libgcc */
#pragma GCC target("popcnt")
#include <immintrin.h>
#define RS_X86 1
#endif
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters (paper section 5) ----------------------------------------------------------
 * RS_LEAF 8: leaf size.  A leaf of m keys needs on average m^m/m! seeds (416 for m = 8); 8 is
 *   the paper's space/time sweet spot (about 1.8 bits/key at bucket 100, less at larger buckets).
 * RS_LOWER_AGGR 4 and RS_UPPER_AGGR 3: fanouts of the two aggregation levels above the leaves,
 *   from the paper's rules max(2, ceil(0.35*leaf + 1/2)) and max(2, ceil(0.21*leaf + 9/10)).
 *   A node of at most 32 (= 8*4) keys splits into parts of 8, a node of at most 96 (= 32*3)
 *   splits into parts of 32, larger nodes split in two with the left part a multiple of 96.
 * RS_BUCKET_SIZE 1000: expected keys per bucket.  Larger buckets amortise the Elias-Fano
 *   bucket directory (about 25 bits per bucket) and reach ~1.6 bits/key, which keeps the file
 *   under 4.22 bytes/key including the 4-byte value+fingerprint record.
 * RS_MAX_M: largest bucket supported by the parameter tables; a bucket is Poisson(1000)
 *   distributed under the keyed hash, so 65536 is never reached without a hash failure. */
#define RS_LEAF 8
#define RS_LOWER_AGGR 4
#define RS_UPPER_AGGR 3
#define RS_LOWER_UNIT (RS_LEAF * RS_LOWER_AGGR)       /* 32 */
#define RS_UPPER_UNIT (RS_LOWER_UNIT * RS_UPPER_AGGR) /* 96 */
#ifndef RS_BUCKET_SIZE
#define RS_BUCKET_SIZE 1000
#endif
#define RS_MAX_M 65536
#define RS_MAX_LEVELS 64
/* Elias-Fano select sample: the position of every 8th one of the upper-bits vector is stored
 * (64 bits per 8 buckets, < 0.01 bits/key), so select scans at most a few words. */
#define RS_EF_SAMPLE 8

#define RS_OK 0
#define RS_ERR_ORDER 1     /* input not in bucket (salted hash) order */
#define RS_ERR_COLLISION 2 /* two keys share the 64-bit in-bucket hash: retry with a new salt */
#define RS_ERR_NOMEM 3
#define RS_ERR_TOOBIG 4    /* bucket larger than RS_MAX_M */
#define RS_ERR_COUNT 5     /* more keys than declared */
#define RS_ERR_DUPLICATE 6 /* the same key twice in a row */

/* ---- hashing ------------------------------------------------------------------------------- */

static inline uint64_t rs_load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* MurmurHash3's 64-bit finaliser (public constants): full avalanche, two multiplications. */
static inline uint64_t rs_fmix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* 64x64 -> 128 multiply folded to 64 bits (both halves depend on all input bits). */
static inline uint64_t rs_mum(uint64_t a, uint64_t b) {
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t rs_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* SplitMix64 (Steele, Lea, Flood 2014): expands one 64-bit salt into independent key words. */
static inline uint64_t rs_splitmix(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Keyed 256 -> 64 bit mixer: each 64-bit word of the key is xored with a secret word and the
 * pairs are multiplied 64x64->128.  Without the secret words the attacker cannot predict which
 * products (and hence which buckets / split paths) his keys produce. */
static inline uint64_t rs_keyed(const uint8_t *key, const uint64_t k[4]) {
    uint64_t a = rs_mum(rs_load64(key) ^ k[0], rs_load64(key + 8) ^ k[1]);
    uint64_t b = rs_mum(rs_load64(key + 16) ^ k[2], rs_load64(key + 24) ^ k[3]);
    return rs_fmix(a ^ rs_rotl(b, 29) ^ k[0]);
}

typedef struct {
    uint64_t kb[4]; /* bucket hash key words (from bucket_salt) */
    uint64_t ks[4]; /* in-bucket split hash key words (from split_salt) */
    uint64_t kf;    /* fingerprint key word (from split_salt) */
} rs_keys;

static inline void rs_keys_init(rs_keys *K, uint64_t bucket_salt, uint64_t split_salt) {
    uint64_t s = bucket_salt;
    for (int i = 0; i < 4; i++) K->kb[i] = rs_splitmix(&s);
    s = split_salt;
    for (int i = 0; i < 4; i++) K->ks[i] = rs_splitmix(&s);
    K->kf = rs_splitmix(&s);
}

/* bucket hash: its high bits pick the bucket (multiply-shift, monotone in the hash, so a file
 * sorted by this hash is in bucket order whatever the bucket count). */
static inline uint64_t rs_hash_bucket(const rs_keys *K, const uint8_t *key) { return rs_keyed(key, K->kb); }
static inline uint64_t rs_hash_split(const rs_keys *K, const uint8_t *key) { return rs_keyed(key, K->ks); }
/* 8-bit fingerprint: an independent keyed function of the split hash. */
static inline uint32_t rs_fingerprint(const rs_keys *K, uint64_t h2) { return (uint32_t)(rs_fmix(h2 ^ K->kf) >> 56); }

static inline uint64_t rs_mulhi(uint64_t a, uint64_t b) { return (uint64_t)(((__uint128_t)a * b) >> 64); }
static inline uint64_t rs_bucket_of(uint64_t h1, uint64_t n_buckets) { return rs_mulhi(h1, n_buckets); }

/* the split hash of a key for seed x, reduced to [0, m) by multiply-shift of its high 32 bits
 * (m <= 65536, so the bias of a 32-bit reduction is below 2^-16 and it vectorises as a
 * 32x32->64 multiply) */
static inline uint32_t rs_split_pos(uint64_t h2, uint64_t x, uint32_t m) {
    return (uint32_t)(((rs_fmix(h2 + x) >> 32) * (uint64_t)m) >> 32);
}

/* ---- parameter tables ------------------------------------------------------------------------ */

static uint8_t rs_golomb_k[RS_MAX_M + 1];   /* Rice parameter of a node of m keys */
static uint32_t rs_fixed_bits[RS_MAX_M + 1]; /* total fixed bits of a subtree of m keys */
static uint32_t rs_nodes[RS_MAX_M + 1];      /* nodes (= unary codes) of a subtree of m keys */
static uint64_t rs_start_seed[RS_MAX_LEVELS]; /* seed search start per tree level */
static int rs_tables_ready = 0;

/* sizes of the parts a node of m > RS_LEAF keys is split into; returns the part count */
static inline uint32_t rs_parts(uint32_t m, uint32_t *unit_out, uint32_t *split_out) {
    if (m > RS_UPPER_UNIT) {
        uint32_t split = ((m / 2 + RS_UPPER_UNIT - 1) / RS_UPPER_UNIT) * RS_UPPER_UNIT;
        *split_out = split;
        *unit_out = 0;
        return 2;
    }
    uint32_t unit = m > RS_LOWER_UNIT ? RS_LOWER_UNIT : RS_LEAF;
    *unit_out = unit;
    *split_out = 0;
    return (m + unit - 1) / unit;
}

/* Rice parameter minimising the expected code length of a geometric(p) seed:
 * len(k) = k + 1 + E[floor(X / 2^k)] = k + 1 + q^K / (1 - q^K), q = 1 - p, K = 2^k.
 *
 * len is convex in k: with x = q^K (and q^(2K) = x^2), len(k+1) - len(k) = 1 - x / (1 - x^2),
 * which grows as x falls, i.e. with k.  So the scan stops at the first k that does not improve
 * on a finite minimum -- no later k can be smaller -- and the first minimum is kept as before.
 * (While q^K still rounds to 1, len is +inf and nothing is compared: tiny p scan further.)
 * The stop changes no table entry (tests/test_index_recsplit.py pins a digest of all of them)
 * and makes rs_init_tables several times cheaper: ~55-65 ms of CPU before, ~10-14 ms after in a
 * standalone C build, ~23 ms measured through golomb_params on the 2-core benchmark machine. */
static uint8_t rs_best_k(double log_p) {
    double p = exp(log_p);
    double lq = log1p(-p);
    double best = 1e300;
    int bk = 0;
    for (int k = 0; k < 48; k++) {
        double qK = exp(ldexp(lq, k));
        double len = k + 1 + qK / (1.0 - qK);
        if (len < best) {
            best = len;
            bk = k;
        } else if (best < 1e300) {
            break;
        }
    }
    return (uint8_t)bk;
}

static void rs_init_tables(void) {
    if (rs_tables_ready) return;
    uint64_t s = 0x5253706c69744c76ULL; /* arbitrary fixed constant ("RSplitLv"): level offsets */
    for (int i = 0; i < RS_MAX_LEVELS; i++) rs_start_seed[i] = rs_splitmix(&s);
    for (uint32_t m = 0; m <= RS_MAX_M; m++) {
        if (m <= 1) {
            rs_golomb_k[m] = 0;
            rs_fixed_bits[m] = 0;
            rs_nodes[m] = 0;
            continue;
        }
        double log_p;
        if (m <= RS_LEAF) {
            log_p = lgamma(m + 1.0) - m * log((double)m); /* m!/m^m: a random map is a bijection */
            rs_golomb_k[m] = rs_best_k(log_p);
            rs_fixed_bits[m] = rs_golomb_k[m];
            rs_nodes[m] = 1;
            continue;
        }
        uint32_t unit, split;
        uint32_t parts = rs_parts(m, &unit, &split);
        uint32_t sizes[RS_UPPER_AGGR + 1];
        if (unit == 0) {
            sizes[0] = split;
            sizes[1] = m - split;
        } else {
            for (uint32_t j = 0; j < parts; j++) sizes[j] = j + 1 < parts ? unit : m - unit * (parts - 1);
        }
        /* multinomial probability that m uniform positions fall in the prescribed parts */
        log_p = lgamma(m + 1.0);
        uint32_t fb = 0, nn = 1;
        for (uint32_t j = 0; j < parts; j++) {
            double sj = sizes[j];
            log_p += -lgamma(sj + 1.0) + sj * log(sj / m);
            fb += rs_fixed_bits[sizes[j]];
            nn += rs_nodes[sizes[j]];
        }
        rs_golomb_k[m] = rs_best_k(log_p);
        rs_fixed_bits[m] = fb + rs_golomb_k[m];
        rs_nodes[m] = nn;
    }
    rs_tables_ready = 1;
}

/* ---- bit vectors ------------------------------------------------------------------------------ */

typedef struct {
    uint64_t *w;
    uint64_t nbits;
    uint64_t cap; /* words */
} rs_bits;

static int rs_bits_reserve(rs_bits *b, uint64_t nbits) {
    uint64_t need = (nbits + 63) / 64 + 2;
    if (need <= b->cap) return 0;
    uint64_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    uint64_t *w = (uint64_t *)realloc(b->w, cap * 8);
    if (!w) return -1;
    memset(w + b->cap, 0, (cap - b->cap) * 8);
    b->w = w;
    b->cap = cap;
    return 0;
}

/* append the low k bits of v (k <= 64, v < 2^k); words beyond nbits are kept zero */
static inline int rs_bits_append(rs_bits *b, uint64_t v, uint32_t k) {
    if (k == 0) return 0;
    if (b->nbits + k + 64 > b->cap * 64 && rs_bits_reserve(b, b->nbits + k + 64)) return -1;
    uint64_t wi = b->nbits >> 6;
    uint32_t o = b->nbits & 63;
    b->w[wi] |= v << o;
    if (o + k > 64) b->w[wi + 1] |= v >> (64 - o);
    b->nbits += k;
    return 0;
}

/* append q zeros then a one */
static inline int rs_bits_unary(rs_bits *b, uint64_t q) {
    if (rs_bits_reserve(b, b->nbits + q + 65)) return -1;
    b->nbits += q;
    b->w[b->nbits >> 6] |= 1ULL << (b->nbits & 63);
    b->nbits += 1;
    return 0;
}

static inline void rs_bits_clear(rs_bits *b) {
    if (b->w) memset(b->w, 0, ((b->nbits + 63) / 64 + 1) * 8);
    b->nbits = 0;
}

/* ---- bounded readers of mapped sections ---------------------------------------------------------
 * Every read of an index file goes through these: `nw` is the section's length in words, a word
 * at or past it reads as 0, and the scans stop there.  A hostile file therefore can only make a
 * lookup compute a wrong position, which the caller's range checks (rs_lookup) turn into
 * RS_LOOKUP_DAMAGED; it can never make it read outside the mapping or loop without end.
 * RS_PAST_END is the position the scans report when they run off the section: larger than any
 * valid bit position, so the end-of-bucket checks reject it. */
#define RS_PAST_END (~0ULL >> 1)

static inline uint64_t rs_word(const uint64_t *w, uint64_t nw, uint64_t i) { return i < nw ? w[i] : 0; }

static inline uint64_t rs_read_bits(const uint64_t *w, uint64_t nw, uint64_t pos, uint32_t k) {
    if (k == 0) return 0;
    uint64_t wi = pos >> 6;
    uint32_t o = pos & 63;
    uint64_t v;
    if (__builtin_expect(wi + 1 < nw, 1)) {
        v = w[wi] >> o;
        if (o + k > 64) v |= w[wi + 1] << (64 - o);
    } else {
        v = rs_word(w, nw, wi) >> o;
        if (o + k > 64) v |= rs_word(w, nw, wi + 1) << (64 - o);
    }
    return k == 64 ? v : v & ((1ULL << k) - 1);
}

/* unary code at *pos: number of zeros before the next one; *pos moves past the one
 * (RS_PAST_END when the section ends first) */
static inline uint64_t rs_read_unary(const uint64_t *w, uint64_t nw, uint64_t *pos) {
    uint64_t p = *pos;
    uint64_t wi = p >> 6;
    if (__builtin_expect(wi >= nw, 0)) {
        *pos = RS_PAST_END;
        return 0;
    }
    uint64_t word = w[wi] >> (p & 63);
    if (word) {
        uint64_t q = (uint64_t)__builtin_ctzll(word);
        *pos = p + q + 1;
        return q;
    }
    uint64_t q = 64 - (p & 63);
    for (;;) {
        if (++wi >= nw) {
            *pos = RS_PAST_END;
            return 0;
        }
        word = w[wi];
        if (word) break;
        q += 64;
    }
    q += (uint64_t)__builtin_ctzll(word);
    *pos = p + q + 1;
    return q;
}

/* position of the r-th (0-based) set bit of word (it must exist) */
static inline uint32_t rs_select64_portable(uint64_t word, uint32_t r) {
    /* skip whole bytes by popcount, then clear the remaining low bits (<= 7 iterations) */
    uint32_t base = 0;
    for (;;) {
        uint32_t c = (uint32_t)__builtin_popcountll(word & 0xff);
        if (c > r) break;
        r -= c;
        word >>= 8;
        base += 8;
    }
    while (r--) word &= word - 1;
    return base + (uint32_t)__builtin_ctzll(word);
}

#ifdef RS_X86
/* BMI2 pdep deposits a single bit at the r-th set position of word.  Used only when the CPU
 * has AVX-512 (see rs_detect_simd): every such CPU also has a fast (3-cycle) pdep, unlike the
 * microcoded pdep of AMD Zen 1/2. */
__attribute__((target("bmi,bmi2"))) static inline uint32_t rs_select64_pdep(uint64_t word, uint32_t r) {
    return (uint32_t)_tzcnt_u64(_pdep_u64(1ULL << r, word));
}
#endif
static int rs_fast_pdep = 0;

static inline uint32_t rs_select64(uint64_t word, uint32_t r) {
#ifdef RS_X86
    if (rs_fast_pdep) return rs_select64_pdep(word, r);
#endif
    return rs_select64_portable(word, r);
}

/* position just after the cnt-th one at or after pos (cnt >= 1); RS_PAST_END when the section
 * of nw words holds fewer */
static inline uint64_t rs_skip_ones(const uint64_t *w, uint64_t nw, uint64_t pos, uint64_t cnt) {
    uint64_t wi = pos >> 6;
    if (__builtin_expect(wi >= nw, 0)) return RS_PAST_END;
    uint64_t word = w[wi] & (~0ULL << (pos & 63));
    for (;;) {
        uint64_t c = (uint64_t)__builtin_popcountll(word);
        if (c >= cnt) break;
        cnt -= c;
        if (++wi >= nw) return RS_PAST_END;
        word = w[wi];
    }
    return wi * 64 + rs_select64(word, (uint32_t)(cnt - 1)) + 1;
}

/* ---- Elias-Fano (monotone sequences: cumulative keys and bit positions per bucket) ----------- */

typedef struct {
    uint64_t n;  /* number of values */
    uint32_t l;  /* low bits per value */
    const uint64_t *low;
    const uint64_t *high;
    const uint64_t *samples; /* position in high of every RS_EF_SAMPLE-th one */
    uint64_t n_low, n_high, n_samples; /* section lengths in words (reads past them see zeros) */
} rs_ef;

typedef struct {
    uint64_t n;
    uint32_t l;
    uint64_t n_low, n_high, n_samples; /* words */
    uint64_t *low, *high, *samples;
} rs_ef_built;

static uint32_t rs_ef_low_bits(uint64_t n, uint64_t universe) {
    if (n == 0) return 0;
    uint64_t r = universe / n;
    uint32_t l = 0;
    while (r >> (l + 1)) l++; /* floor(log2(universe / n)), 0 when universe < 2n */
    return r ? l : 0;
}

static int rs_ef_build(const uint64_t *v, uint64_t n, rs_ef_built *e) {
    memset(e, 0, sizeof(*e));
    uint64_t u = n ? v[n - 1] : 0;
    e->n = n;
    e->l = rs_ef_low_bits(n, u);
    e->n_low = (n * e->l + 63) / 64 + 1;
    uint64_t hbits = n + (u >> e->l) + 1;
    e->n_high = (hbits + 63) / 64 + 1;
    e->n_samples = (n + RS_EF_SAMPLE - 1) / RS_EF_SAMPLE + 1;
    e->low = (uint64_t *)calloc(e->n_low, 8);
    e->high = (uint64_t *)calloc(e->n_high, 8);
    e->samples = (uint64_t *)calloc(e->n_samples, 8);
    if (!e->low || !e->high || !e->samples) return -1;
    uint64_t mask = e->l ? ((1ULL << e->l) - 1) : 0;
    for (uint64_t i = 0; i < n; i++) {
        if (e->l) {
            uint64_t pos = i * e->l, lv = v[i] & mask;
            e->low[pos >> 6] |= lv << (pos & 63);
            if ((pos & 63) + e->l > 64) e->low[(pos >> 6) + 1] |= lv >> (64 - (pos & 63));
        }
        uint64_t hp = (v[i] >> e->l) + i;
        e->high[hp >> 6] |= 1ULL << (hp & 63);
        if (i % RS_EF_SAMPLE == 0) e->samples[i / RS_EF_SAMPLE] = hp;
    }
    return 0;
}

static void rs_ef_free(rs_ef_built *e) {
    free(e->low);
    free(e->high);
    free(e->samples);
    memset(e, 0, sizeof(*e));
}

/* position in high of the i-th one (i < n, so the sample index is within n_samples, checked
 * on open) */
static inline uint64_t rs_ef_select(const rs_ef *e, uint64_t i) {
    uint64_t p = e->samples[i / RS_EF_SAMPLE];
    uint64_t r = i % RS_EF_SAMPLE;
    if (r == 0) return p;
    return rs_skip_ones(e->high, e->n_high, p + 1, r) - 1;
}

/* values i and i+1 (i + 1 < n).  On a damaged file the results are arbitrary numbers; the
 * caller range-checks them before using them as positions. */
static inline void rs_ef_get2(const rs_ef *e, uint64_t i, uint64_t *a, uint64_t *b) {
    uint64_t p = rs_ef_select(e, i);
    uint64_t q = rs_skip_ones(e->high, e->n_high, p + 1, 1) - 1;
    uint64_t lo = e->l ? rs_read_bits(e->low, e->n_low, i * e->l, e->l) : 0;
    uint64_t lo2 = e->l ? rs_read_bits(e->low, e->n_low, (i + 1) * e->l, e->l) : 0;
    *a = ((p - i) << e->l) | lo;
    *b = ((q - i - 1) << e->l) | lo2;
}

static void rs_detect_simd(void);

/* ---- builder -------------------------------------------------------------------------------- */

typedef struct {
    rs_keys K;
    uint64_t n_keys, n_buckets;
    uint64_t added;          /* keys consumed so far */
    uint64_t cur_bucket;     /* bucket being accumulated */
    uint64_t last_h1;
    uint8_t last_key[32];
    uint32_t m, cap;         /* keys in the current bucket, capacity of the arrays below */
    uint64_t *h;             /* split hashes of the current bucket */
    uint32_t *rec;           /* value | fingerprint << 24 of the current bucket */
    uint32_t *ids, *pos;     /* working ids (into h/rec), final in-bucket positions by id */
    uint64_t *tmp_h;         /* partition scratch */
    uint32_t *tmp_ids;
    uint32_t *out;           /* n_keys records in MPHF order (the output) */
    uint64_t *cum_keys;      /* n_buckets + 1 */
    uint64_t *bit_pos;       /* n_buckets + 1 */
    rs_bits bits, fixed, unary;
    int force_collision;     /* test hook: report a collision at the first bucket */
    uint32_t max_bucket;
} rs_builder;

static void rs_builder_free(rs_builder *b) {
    if (!b) return;
    free(b->h);
    free(b->rec);
    free(b->ids);
    free(b->pos);
    free(b->tmp_h);
    free(b->tmp_ids);
    free(b->cum_keys);
    free(b->bit_pos);
    free(b->bits.w);
    free(b->fixed.w);
    free(b->unary.w);
    free(b);
}

static rs_builder *rs_builder_new(uint64_t n_keys, uint64_t n_buckets, uint64_t bucket_salt, uint64_t split_salt,
                                  uint32_t *out) {
    rs_init_tables();
    rs_detect_simd();
    rs_builder *b = (rs_builder *)calloc(1, sizeof(rs_builder));
    if (!b) return NULL;
    rs_keys_init(&b->K, bucket_salt, split_salt);
    b->n_keys = n_keys;
    b->n_buckets = n_buckets;
    b->out = out;
    b->cap = 2048;
    b->h = (uint64_t *)malloc(b->cap * 8);
    b->rec = (uint32_t *)malloc(b->cap * 4);
    b->ids = (uint32_t *)malloc(b->cap * 4);
    b->pos = (uint32_t *)malloc(b->cap * 4);
    b->tmp_h = (uint64_t *)malloc(b->cap * 8);
    b->tmp_ids = (uint32_t *)malloc(b->cap * 4);
    b->cum_keys = (uint64_t *)calloc(n_buckets + 1, 8);
    b->bit_pos = (uint64_t *)calloc(n_buckets + 1, 8);
    if (!b->h || !b->rec || !b->ids || !b->pos || !b->tmp_h || !b->tmp_ids || !b->cum_keys || !b->bit_pos ||
        rs_bits_reserve(&b->bits, 1 << 16) || rs_bits_reserve(&b->fixed, 1 << 14) ||
        rs_bits_reserve(&b->unary, 1 << 14)) {
        rs_builder_free(b);
        return NULL;
    }
    return b;
}

static int rs_builder_grow(rs_builder *b) {
    uint32_t cap = b->cap * 2;
    if (cap > RS_MAX_M) cap = RS_MAX_M;
    if (cap <= b->cap) return RS_ERR_TOOBIG;
    uint64_t *h = (uint64_t *)realloc(b->h, cap * 8);
    if (h) b->h = h;
    uint32_t *rec = (uint32_t *)realloc(b->rec, cap * 4);
    if (rec) b->rec = rec;
    uint32_t *ids = (uint32_t *)realloc(b->ids, cap * 4);
    if (ids) b->ids = ids;
    uint32_t *pos = (uint32_t *)realloc(b->pos, cap * 4);
    if (pos) b->pos = pos;
    uint64_t *th = (uint64_t *)realloc(b->tmp_h, cap * 8);
    if (th) b->tmp_h = th;
    uint32_t *ti = (uint32_t *)realloc(b->tmp_ids, cap * 4);
    if (ti) b->tmp_ids = ti;
    if (!h || !rec || !ids || !pos || !th || !ti) return RS_ERR_NOMEM;
    b->cap = cap;
    return RS_OK;
}


/* ---- seed searches ------------------------------------------------------------------------------
 * Each returns the smallest seed >= x that satisfies the node's condition.  The AVX-512 versions
 * test 8 consecutive seeds at once (one per 64-bit lane, keys streamed through the lanes) and pick
 * the lowest successful lane, so both paths return the same seed and write identical files. */

static int rs_simd = -1; /* -1 unknown, 0 scalar, 1 AVX-512 */

static uint64_t rs_find_leaf_scalar(const uint64_t *h, uint32_t m, uint64_t x) {
    const uint32_t full = (1u << m) - 1;
    for (;; x++) {
        uint32_t mask = 0, i;
        for (i = 0; i < m; i++) {
            uint32_t bit = 1u << rs_split_pos(h[i], x, m);
            if (mask & bit) break;
            mask |= bit;
        }
        if (mask == full) return x;
    }
}

static uint64_t rs_find_upper_scalar(const uint64_t *h, uint32_t m, uint32_t split, uint64_t x) {
    for (;; x++) {
        uint32_t cnt = 0;
        for (uint32_t i = 0; i < m; i++) cnt += rs_split_pos(h[i], x, m) < split;
        if (cnt == split) return x;
    }
}

static uint64_t rs_find_lower_scalar(const uint64_t *h, uint32_t m, uint32_t shift, uint32_t parts, uint32_t unit,
                                     uint64_t x) {
    for (;; x++) {
        uint32_t cnt[RS_LOWER_AGGR + 1] = {0};
        for (uint32_t i = 0; i < m; i++) cnt[rs_split_pos(h[i], x, m) >> shift]++;
        uint32_t j = 0;
        while (j + 1 < parts && cnt[j] == unit) j++;
        if (j + 1 == parts) return x;
    }
}

#ifdef RS_X86
#define RS_AVX512 __attribute__((target("avx512f,avx512dq,popcnt")))

RS_AVX512 static inline __m512i rs_v_fmix(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi64(x, 33));
    x = _mm512_mullo_epi64(x, _mm512_set1_epi64((long long)0xff51afd7ed558ccdULL));
    x = _mm512_xor_si512(x, _mm512_srli_epi64(x, 33));
    x = _mm512_mullo_epi64(x, _mm512_set1_epi64((long long)0xc4ceb9fe1a85ec53ULL));
    return _mm512_xor_si512(x, _mm512_srli_epi64(x, 33));
}

/* positions in [0, m) of key h for the 8 seeds in `seeds` (same formula as rs_split_pos) */
RS_AVX512 static inline __m512i rs_v_pos(uint64_t h, __m512i seeds, __m512i vm) {
    __m512i r = rs_v_fmix(_mm512_add_epi64(_mm512_set1_epi64((long long)h), seeds));
    return _mm512_srli_epi64(_mm512_mul_epu32(_mm512_srli_epi64(r, 32), vm), 32);
}

RS_AVX512 static uint64_t rs_find_leaf_avx512(const uint64_t *h, uint32_t m, uint64_t x) {
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i vm = _mm512_set1_epi64(m), one = _mm512_set1_epi64(1);
    const __m512i full = _mm512_set1_epi64((1LL << m) - 1);
    for (;; x += 8) {
        __m512i seeds = _mm512_add_epi64(_mm512_set1_epi64((long long)x), lane);
        __m512i mask = _mm512_setzero_si512();
        for (uint32_t i = 0; i < m; i++)
            mask = _mm512_or_si512(mask, _mm512_sllv_epi64(one, rs_v_pos(h[i], seeds, vm)));
        __mmask8 ok = _mm512_cmpeq_epu64_mask(mask, full);
        if (ok) return x + (uint64_t)__builtin_ctz(ok);
    }
}

RS_AVX512 static uint64_t rs_find_upper_avx512(const uint64_t *h, uint32_t m, uint32_t split, uint64_t x) {
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i vm = _mm512_set1_epi64(m), vs = _mm512_set1_epi64(split), one = _mm512_set1_epi64(1);
    for (;; x += 8) {
        __m512i seeds = _mm512_add_epi64(_mm512_set1_epi64((long long)x), lane);
        __m512i c0 = _mm512_setzero_si512(), c1 = _mm512_setzero_si512();
        uint32_t i = 0;
        for (; i + 2 <= m; i += 2) { /* two accumulators: shorter dependency chains */
            c0 = _mm512_mask_add_epi64(c0, _mm512_cmplt_epu64_mask(rs_v_pos(h[i], seeds, vm), vs), c0, one);
            c1 = _mm512_mask_add_epi64(c1, _mm512_cmplt_epu64_mask(rs_v_pos(h[i + 1], seeds, vm), vs), c1, one);
        }
        if (i < m) c0 = _mm512_mask_add_epi64(c0, _mm512_cmplt_epu64_mask(rs_v_pos(h[i], seeds, vm), vs), c0, one);
        __mmask8 ok = _mm512_cmpeq_epu64_mask(_mm512_add_epi64(c0, c1), vs);
        if (ok) return x + (uint64_t)__builtin_ctz(ok);
    }
}

RS_AVX512 static uint64_t rs_find_lower_avx512(const uint64_t *h, uint32_t m, uint32_t shift, uint32_t parts,
                                                uint32_t unit, uint64_t x) {
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i vm = _mm512_set1_epi64(m), vu = _mm512_set1_epi64(unit), one = _mm512_set1_epi64(1);
    const __m512i p0 = _mm512_setzero_si512(), p1 = _mm512_set1_epi64(1), p2 = _mm512_set1_epi64(2);
    for (;; x += 8) {
        __m512i seeds = _mm512_add_epi64(_mm512_set1_epi64((long long)x), lane);
        __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0;
        for (uint32_t i = 0; i < m; i++) {
            __m512i part = _mm512_srli_epi64(rs_v_pos(h[i], seeds, vm), shift);
            c0 = _mm512_mask_add_epi64(c0, _mm512_cmpeq_epu64_mask(part, p0), c0, one);
            c1 = _mm512_mask_add_epi64(c1, _mm512_cmpeq_epu64_mask(part, p1), c1, one);
            c2 = _mm512_mask_add_epi64(c2, _mm512_cmpeq_epu64_mask(part, p2), c2, one);
        }
        /* parts 0..parts-2 must hold exactly `unit` keys (the last part then holds the rest) */
        __mmask8 ok = _mm512_cmpeq_epu64_mask(c0, vu);
        if (parts > 2) ok &= _mm512_cmpeq_epu64_mask(c1, vu);
        if (parts > 3) ok &= _mm512_cmpeq_epu64_mask(c2, vu);
        if (ok) return x + (uint64_t)__builtin_ctz(ok);
    }
}
#endif

static void rs_detect_simd(void) {
    if (rs_simd >= 0) return;
    rs_simd = 0;
#ifdef RS_X86
    const char *env = getenv("RPCBACKFILL_RECSPLIT_SCALAR");
    if (!(env && *env && *env != '0')) {
        __builtin_cpu_init();
        rs_simd = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    }
    __builtin_cpu_init();
    rs_fast_pdep = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("bmi2");
#endif
}

static inline uint64_t rs_find_leaf(const uint64_t *h, uint32_t m, uint64_t x) {
#ifdef RS_X86
    if (rs_simd == 1) return rs_find_leaf_avx512(h, m, x);
#endif
    return rs_find_leaf_scalar(h, m, x);
}

static inline uint64_t rs_find_upper(const uint64_t *h, uint32_t m, uint32_t split, uint64_t x) {
#ifdef RS_X86
    if (rs_simd == 1) return rs_find_upper_avx512(h, m, split, x);
#endif
    return rs_find_upper_scalar(h, m, split, x);
}

static inline uint64_t rs_find_lower(const uint64_t *h, uint32_t m, uint32_t shift, uint32_t parts, uint32_t unit,
                                     uint64_t x) {
#ifdef RS_X86
    if (rs_simd == 1) return rs_find_lower_avx512(h, m, shift, parts, unit, x);
#endif
    return rs_find_lower_scalar(h, m, shift, parts, unit, x);
}

/* Recursive split of h[0..m) (ids alongside) at tree depth `level`; base = first in-bucket
 * position of this subtree.  Emits seeds in preorder. */
static int rs_split(rs_builder *b, uint64_t *h, uint32_t *ids, uint32_t m, uint32_t level, uint32_t base) {
    if (m == 0) return RS_OK;
    if (m == 1) {
        b->pos[ids[0]] = base;
        return RS_OK;
    }
    uint64_t start = rs_start_seed[level < RS_MAX_LEVELS ? level : RS_MAX_LEVELS - 1];
    uint64_t x = start;
    if (m <= RS_LEAF) {
        /* two equal split hashes can never be separated: the only unsplittable input */
        for (uint32_t i = 0; i < m; i++)
            for (uint32_t j = i + 1; j < m; j++)
                if (h[i] == h[j]) return RS_ERR_COLLISION;
        x = rs_find_leaf(h, m, x);
        for (uint32_t i = 0; i < m; i++) b->pos[ids[i]] = base + rs_split_pos(h[i], x, m);
    } else {
        uint32_t unit, split;
        uint32_t parts = rs_parts(m, &unit, &split);
        if (unit == 0)
            x = rs_find_upper(h, m, split, x);
        else
            x = rs_find_lower(h, m, unit == RS_LEAF ? 3 : 5, parts, unit, x); /* unit is 8 or 32 */
        /* stable partition into tmp, then back */
        uint32_t off[RS_LOWER_AGGR + 1];
        uint32_t sizes[RS_LOWER_AGGR + 1];
        if (unit == 0) {
            sizes[0] = split;
            sizes[1] = m - split;
        } else {
            for (uint32_t j = 0; j < parts; j++) sizes[j] = j + 1 < parts ? unit : m - unit * (parts - 1);
        }
        off[0] = 0;
        for (uint32_t j = 1; j < parts; j++) off[j] = off[j - 1] + sizes[j - 1];
        uint32_t fill[RS_LOWER_AGGR + 1];
        memcpy(fill, off, sizeof(off));
        for (uint32_t i = 0; i < m; i++) {
            uint32_t r = rs_split_pos(h[i], x, m);
            uint32_t part = unit == 0 ? (r >= split) : (r >> (unit == RS_LEAF ? 3 : 5));
            b->tmp_h[fill[part]] = h[i];
            b->tmp_ids[fill[part]] = ids[i];
            fill[part]++;
        }
        memcpy(h, b->tmp_h, (size_t)m * 8);
        memcpy(ids, b->tmp_ids, (size_t)m * 4);
        uint64_t seed = x - start;
        uint32_t k = rs_golomb_k[m];
        if (rs_bits_append(&b->fixed, seed & (k ? (~0ULL >> (64 - k)) : 0), k) ||
            rs_bits_unary(&b->unary, seed >> k))
            return RS_ERR_NOMEM;
        for (uint32_t j = 0; j < parts; j++) {
            int rc = rs_split(b, h + off[j], ids + off[j], sizes[j], level + 1, base + off[j]);
            if (rc) return rc;
        }
        return RS_OK;
    }
    uint64_t seed = x - start;
    uint32_t k = rs_golomb_k[m];
    if (rs_bits_append(&b->fixed, seed & (k ? (~0ULL >> (64 - k)) : 0), k) || rs_bits_unary(&b->unary, seed >> k))
        return RS_ERR_NOMEM;
    return RS_OK;
}

static int rs_append_bitvec(rs_bits *dst, const rs_bits *src) {
    uint64_t full = src->nbits / 64;
    for (uint64_t i = 0; i < full; i++)
        if (rs_bits_append(dst, src->w[i], 64)) return RS_ERR_NOMEM;
    uint32_t rest = src->nbits & 63;
    if (rest && rs_bits_append(dst, src->w[full] & ((1ULL << rest) - 1), rest)) return RS_ERR_NOMEM;
    return RS_OK;
}

/* build the current bucket and move on to bucket `next` */
static int rs_flush_bucket(rs_builder *b, uint64_t next) {
    uint64_t bk = b->cur_bucket;
    uint32_t m = b->m;
    uint64_t offset = b->cum_keys[bk];
    b->bit_pos[bk] = b->bits.nbits;
    if (m) {
        if (b->force_collision) {
            b->force_collision = 0;
            return RS_ERR_COLLISION;
        }
        if (m > b->max_bucket) b->max_bucket = m;
        for (uint32_t i = 0; i < m; i++) b->ids[i] = i;
        rs_bits_clear(&b->fixed);
        rs_bits_clear(&b->unary);
        int rc = rs_split(b, b->h, b->ids, m, 0, 0);
        if (rc) return rc;
        /* h was permuted by the partitions but rec is indexed by the original id */
        for (uint32_t i = 0; i < m; i++) b->out[offset + b->pos[i]] = b->rec[i];
        if (rs_append_bitvec(&b->bits, &b->fixed) || rs_append_bitvec(&b->bits, &b->unary)) return RS_ERR_NOMEM;
    }
    b->cum_keys[bk + 1] = offset + m;
    /* empty buckets in between */
    for (uint64_t e = bk + 1; e < next && e < b->n_buckets; e++) {
        b->bit_pos[e] = b->bits.nbits;
        b->cum_keys[e + 1] = b->cum_keys[e];
    }
    b->cur_bucket = next;
    b->m = 0;
    return RS_OK;
}

/* add one key (32 bytes) with its value (< 2^24), in non-decreasing bucket-hash order */
static int rs_builder_add(rs_builder *b, const uint8_t *key, uint32_t value) {
    if (b->added >= b->n_keys) return RS_ERR_COUNT;
    uint64_t h1 = rs_hash_bucket(&b->K, key);
    if (b->added && h1 <= b->last_h1) {
        if (h1 < b->last_h1) return RS_ERR_ORDER;
        /* identical keys have identical h1 and are adjacent in the input */
        if (memcmp(key, b->last_key, 32) == 0) return RS_ERR_DUPLICATE;
    }
    b->last_h1 = h1;
    memcpy(b->last_key, key, 32);
    uint64_t bk = rs_bucket_of(h1, b->n_buckets);
    if (bk != b->cur_bucket) {
        int rc = rs_flush_bucket(b, bk);
        if (rc) return rc;
    }
    if (b->m == b->cap) {
        int rc = rs_builder_grow(b);
        if (rc) return rc;
    }
    uint64_t h2 = rs_hash_split(&b->K, key);
    b->h[b->m] = h2;
    b->rec[b->m] = value | (rs_fingerprint(&b->K, h2) << 24);
    b->m++;
    b->added++;
    return RS_OK;
}

static int rs_builder_finish(rs_builder *b) {
    if (b->n_buckets == 0) return RS_OK;
    int rc = rs_flush_bucket(b, b->n_buckets);
    if (rc) return rc;
    b->bit_pos[b->n_buckets] = b->bits.nbits;
    return RS_OK;
}

/* ---- lookup ----------------------------------------------------------------------------------- */

#define RS_LOOKUP_ABSENT (-1)  /* the key is certainly not in the index */
#define RS_LOOKUP_DAMAGED (-2) /* the file's directory or seeds are impossible for this key */

typedef struct {
    rs_keys K;
    uint64_t n_keys, n_buckets;
    uint32_t range_start;
    const uint32_t *vals; /* n_keys records: value | fingerprint << 24 */
    const uint64_t *bits;
    uint64_t n_bits_words; /* words of the seeds section */
    uint64_t seed_bits;    /* used bits of it (every bucket's seeds end at or before) */
    rs_ef ef_keys, ef_bits;
} rs_index;

/* Walk down a bucket's splitting tree for one key.  fp / up: read positions in the fixed and
 * unary parts of the bucket's Golomb-Rice codes; base: first in-bucket position of the current
 * node; m: keys of the current node (0 once the walk is finished).  The walk ends after at most
 * one node per tree level whatever the file holds (m shrinks at every step), and base + m never
 * exceeds the bucket's key count. */
typedef struct {
    uint64_t fp, up, h2;
    uint32_t m, base, level;
} rs_walk;

static inline void rs_walk_init(rs_walk *w, uint64_t start, uint32_t m, uint64_t h2) {
    w->fp = start;
    w->up = start + rs_fixed_bits[m];
    w->h2 = h2;
    w->m = m;
    w->base = 0;
    w->level = 0;
}

/* one node of the walk; returns 1 when the walk is finished (w->base is the position) */
static inline int rs_walk_step(const uint64_t *bits, uint64_t nw, rs_walk *w) {
    uint32_t m = w->m;
    if (m <= 1) {
        w->m = 0;
        return 1;
    }
    uint32_t k = rs_golomb_k[m];
    uint64_t fixed = rs_read_bits(bits, nw, w->fp, k);
    w->fp += k;
    uint64_t seed = (rs_read_unary(bits, nw, &w->up) << k) | fixed;
    uint32_t lv = w->level < RS_MAX_LEVELS ? w->level : RS_MAX_LEVELS - 1;
    uint32_t r = rs_split_pos(w->h2, rs_start_seed[lv] + seed, m);
    if (m <= RS_LEAF) {
        w->base += r;
        w->m = 0;
        return 1;
    }
    uint32_t unit, split;
    rs_parts(m, &unit, &split);
    if (unit == 0) {
        if (r < split) {
            m = split;
        } else {
            w->fp += rs_fixed_bits[split];
            if (rs_nodes[split]) w->up = rs_skip_ones(bits, nw, w->up, rs_nodes[split]);
            w->base += split;
            m -= split;
        }
    } else {
        uint32_t part = r >> (unit == RS_LEAF ? 3 : 5);
        if (part) {
            w->fp += (uint64_t)rs_fixed_bits[unit] * part;
            w->up = rs_skip_ones(bits, nw, w->up, (uint64_t)rs_nodes[unit] * part);
            w->base += unit * part;
        }
        uint32_t rest = m - unit * part;
        m = rest < unit ? rest : unit;
    }
    w->m = m;
    w->level++;
    return 0;
}

/* A finished walk of a bucket of m keys whose seeds end at bit `end` is plausible only if it read
 * nothing past the bucket (a valid file never does). */
static inline int rs_walk_ok(const rs_walk *w, uint64_t end, uint32_t m) {
    return w->fp <= end && w->up <= end && w->base < m;
}

/* Bucket directory of bucket bk: keys [*c0, *c1), seed bits [*s, *e).  Returns 0 for an empty
 * bucket, 1 for a bucket with keys, -1 when the entries are impossible (damaged file): more keys
 * than the file holds or than a bucket can have, seeds outside the seeds section or too few
 * bits for the bucket's tree. */
static inline int rs_bucket(const rs_index *ix, uint64_t bk, uint64_t *c0, uint64_t *c1, uint64_t *s, uint64_t *e) {
    rs_ef_get2(&ix->ef_keys, bk, c0, c1);
    if (*c1 == *c0) return 0;
    if (*c1 < *c0 || *c1 > ix->n_keys || *c1 - *c0 > RS_MAX_M) return -1;
    uint64_t m = *c1 - *c0;
    rs_ef_get2(&ix->ef_bits, bk, s, e);
    if (*e < *s || *e > ix->seed_bits || *e - *s < (uint64_t)rs_fixed_bits[m] + rs_nodes[m]) return -1;
    return 1;
}

/* fetch a bucket's seed lines (64-byte lines of 512 bits) in parallel; at most 16 lines (a
 * bucket of ~1000 keys uses about 4) */
static inline void rs_prefetch_seeds(const rs_index *ix, uint64_t start, uint64_t end) {
    uint64_t last = end >> 9;
    if (last > (start >> 9) + 16) last = (start >> 9) + 16;
    for (uint64_t line = start >> 9; line <= last; line++) __builtin_prefetch(&ix->bits[line << 3]);
}

/* value (ledger - range start) of key, RS_LOOKUP_ABSENT when the key is certainly absent,
 * RS_LOOKUP_DAMAGED when the file cannot be right */
static inline int64_t rs_lookup(const rs_index *ix, const uint8_t *key) {
    if (ix->n_keys == 0) return RS_LOOKUP_ABSENT;
    uint64_t h1 = rs_hash_bucket(&ix->K, key);
    uint64_t bk = rs_bucket_of(h1, ix->n_buckets);
    uint64_t c0, c1, start = 0, end = 0;
    int b = rs_bucket(ix, bk, &c0, &c1, &start, &end);
    if (b <= 0) return b < 0 ? RS_LOOKUP_DAMAGED : RS_LOOKUP_ABSENT;
    rs_prefetch_seeds(ix, start, end);
    uint64_t h2 = rs_hash_split(&ix->K, key);
    uint32_t m = (uint32_t)(c1 - c0);
    rs_walk w;
    rs_walk_init(&w, start, m, h2);
    while (!rs_walk_step(ix->bits, ix->n_bits_words, &w)) {
    }
    if (!rs_walk_ok(&w, end, m)) return RS_LOOKUP_DAMAGED;
    uint32_t rec = ix->vals[c0 + w.base];
    if ((rec >> 24) != rs_fingerprint(&ix->K, h2)) return RS_LOOKUP_ABSENT;
    return rec & 0xffffff;
}

/* Batched lookup, software-pipelined over windows of RS_BATCH_WINDOW keys:
 *   prepare(w):   hash the keys, read the bucket directory (Elias-Fano), prefetch each bucket's
 *                 seed bits;
 *   walk(w-1):    walk the splitting trees of the previous window, all keys in lockstep (one
 *                 node per key per pass, so the dependent chains of different keys overlap),
 *                 prefetch each key's value slot;
 *   finish(w-2):  read the values two windows later, when their cache lines have arrived.
 * out[i] = base + value, or 0 when key i is certainly absent or its lookup met damage; returns
 * the number of keys whose lookup met damage (0 on a sound file). */
#ifndef RS_BATCH_WINDOW
#define RS_BATCH_WINDOW 64 /* keys per pipeline window: measured 64 > 32 > 128 on this machine */
#endif

typedef struct {
    uint64_t h2[RS_BATCH_WINDOW], slot[RS_BATCH_WINDOW], start[RS_BATCH_WINDOW], end[RS_BATCH_WINDOW];
    uint32_t m[RS_BATCH_WINDOW];
    uint8_t bad[RS_BATCH_WINDOW];
    uint64_t first;
    uint32_t n;
} rs_window;

static inline void rs_win_prepare(const rs_index *ix, const uint8_t *keys, uint64_t first, uint32_t wn,
                                  rs_window *w) {
    uint64_t bk[RS_BATCH_WINDOW];
    w->first = first;
    w->n = wn;
    for (uint32_t j = 0; j < wn; j++) {
        const uint8_t *k = keys + 32 * (first + j);
        bk[j] = rs_bucket_of(rs_hash_bucket(&ix->K, k), ix->n_buckets);
        w->h2[j] = rs_hash_split(&ix->K, k);
        __builtin_prefetch(&ix->ef_keys.samples[bk[j] / RS_EF_SAMPLE]);
        __builtin_prefetch(&ix->ef_bits.samples[bk[j] / RS_EF_SAMPLE]);
    }
    for (uint32_t j = 0; j < wn; j++) {
        uint64_t c0, c1;
        int b = rs_bucket(ix, bk[j], &c0, &c1, &w->start[j], &w->end[j]);
        w->bad[j] = b < 0;
        w->slot[j] = c0;
        w->m[j] = b > 0 ? (uint32_t)(c1 - c0) : 0;
        /* the whole bucket's seeds: a walk touches most of its cache lines */
        if (b > 0) rs_prefetch_seeds(ix, w->start[j], w->end[j]);
    }
}

static inline void rs_win_walk(const rs_index *ix, rs_window *w) {
    rs_walk walks[RS_BATCH_WINDOW];
    uint32_t active[RS_BATCH_WINDOW], na = 0;
    for (uint32_t j = 0; j < w->n; j++)
        if (w->m[j]) {
            rs_walk_init(&walks[j], w->start[j], w->m[j], w->h2[j]);
            active[na++] = j;
        }
    while (na) {
        uint32_t keep = 0;
        for (uint32_t a = 0; a < na; a++) {
            uint32_t j = active[a];
            if (rs_walk_step(ix->bits, ix->n_bits_words, &walks[j])) {
                if (rs_walk_ok(&walks[j], w->end[j], w->m[j])) {
                    w->slot[j] += walks[j].base;
                    __builtin_prefetch(&ix->vals[w->slot[j]]);
                } else {
                    w->bad[j] = 1;
                    w->m[j] = 0;
                }
            } else {
                active[keep++] = j;
            }
        }
        na = keep;
    }
}

static inline uint64_t rs_win_finish(const rs_index *ix, const rs_window *w, uint32_t *out, uint32_t base) {
    uint64_t bad = 0;
    for (uint32_t j = 0; j < w->n; j++) {
        uint32_t v = 0;
        if (w->m[j]) {
            uint32_t rec = ix->vals[w->slot[j]];
            if ((rec >> 24) == rs_fingerprint(&ix->K, w->h2[j])) v = base + (rec & 0xffffff);
        }
        bad += w->bad[j];
        out[w->first + j] = v;
    }
    return bad;
}

static uint64_t rs_lookup_batch(const rs_index *ix, const uint8_t *keys, uint64_t n, uint32_t *out, uint32_t base) {
    if (ix->n_keys == 0) {
        memset(out, 0, n * 4);
        return 0;
    }
    rs_window win[3];
    uint64_t nw = (n + RS_BATCH_WINDOW - 1) / RS_BATCH_WINDOW, bad = 0;
    for (uint64_t i = 0; i < nw + 2; i++) {
        if (i < nw) {
            uint64_t first = i * RS_BATCH_WINDOW;
            uint32_t wn = (uint32_t)(n - first < RS_BATCH_WINDOW ? n - first : RS_BATCH_WINDOW);
            rs_win_prepare(ix, keys, first, wn, &win[i % 3]);
        }
        if (i >= 1 && i - 1 < nw) rs_win_walk(ix, &win[(i - 1) % 3]);
        if (i >= 2 && i - 2 < nw) bad += rs_win_finish(ix, &win[(i - 2) % 3], out, base);
    }
    return bad;
}

/* ---- opening a file ------------------------------------------------------------------------------
 * rs_index_open checks everything the lookups rely on, from the 256-byte header (layout in
 * docs/recsplit-format.md) and the file size alone, before any pointer into the file is formed:
 * magic, version, parameters, declared size, key/bucket counts, and that every section lies in
 * the file and is long enough for the counts.  What it cannot check without reading the whole
 * file (the contents of the sections) the bounded readers and rs_bucket/rs_walk_ok contain.
 * The CRC over the whole file is checked by the caller (rpcbackfill/index/recsplit.py). */

#define RS_OPEN_OK 0
#define RS_OPEN_CORRUPT 1
#define RS_OPEN_UNSUPPORTED 2
#define RS_FILE_VERSION 1
#define RS_HEADER_BYTES 256
#define RS_MAGIC "RBTXIDX\0"

static inline uint32_t rs_load32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* section at header offset `at`: (offset, length) pair; 0 if it lies in the file past the header
 * on an 8-byte boundary */
static int rs_section(const uint8_t *h, uint32_t at, uint64_t size, const char *name, uint64_t *off, uint64_t *len,
                      char *err, size_t errlen) {
    *off = rs_load64(h + at);
    *len = rs_load64(h + at + 8);
    if (*off < RS_HEADER_BYTES || *off % 8 || *off > size || *len > size - *off) {
        snprintf(err, errlen, "section %s [%llu, +%llu) lies outside the file of %llu bytes", name,
                 (unsigned long long)*off, (unsigned long long)*len, (unsigned long long)size);
        return -1;
    }
    return 0;
}

static int rs_ef_open(const uint8_t *buf, uint32_t at, uint64_t size, uint64_t n_expect, const char *name, rs_ef *e,
                      char *err, size_t errlen) {
    const uint8_t *h = buf;
    uint64_t off, len;
    char sec[32];
    e->n = rs_load64(h + at);
    e->l = rs_load32(h + at + 8);
    if (e->n != n_expect) {
        snprintf(err, errlen, "Elias-Fano %s holds %llu values, expected %llu", name, (unsigned long long)e->n,
                 (unsigned long long)n_expect);
        return -1;
    }
    if (e->l >= 64) {
        snprintf(err, errlen, "Elias-Fano %s low width %u is invalid", name, e->l);
        return -1;
    }
    snprintf(sec, sizeof sec, "%s_low", name);
    if (rs_section(h, at + 16, size, sec, &off, &len, err, errlen)) return -1;
    e->low = (const uint64_t *)(buf + off);
    e->n_low = len / 8;
    snprintf(sec, sizeof sec, "%s_high", name);
    if (rs_section(h, at + 32, size, sec, &off, &len, err, errlen)) return -1;
    e->high = (const uint64_t *)(buf + off);
    e->n_high = len / 8;
    snprintf(sec, sizeof sec, "%s_samples", name);
    if (rs_section(h, at + 48, size, sec, &off, &len, err, errlen)) return -1;
    e->samples = (const uint64_t *)(buf + off);
    e->n_samples = len / 8;
    /* n <= size, l < 64: no overflow */
    if (e->n_low < (e->n * e->l + 63) / 64 + 1 || e->n_high < 2 ||
        e->n_samples < (e->n + RS_EF_SAMPLE - 1) / RS_EF_SAMPLE) {
        snprintf(err, errlen, "Elias-Fano %s sections are too short for %llu values", name, (unsigned long long)e->n);
        return -1;
    }
    return 0;
}

/* Returns RS_OPEN_OK / RS_OPEN_CORRUPT / RS_OPEN_UNSUPPORTED; err receives the reason.  Reads only
 * buf[0, min(size, 256)).  buf must be 8-byte aligned (a mapping is). */
static int rs_index_open(rs_index *ix, const uint8_t *buf, uint64_t size, char *err, size_t errlen) {
    memset(ix, 0, sizeof(*ix));
    err[0] = 0;
    if (size < 16) {
        snprintf(err, errlen, "truncated (%llu bytes)", (unsigned long long)size);
        return RS_OPEN_CORRUPT;
    }
    if (memcmp(buf, RS_MAGIC, 8) != 0) {
        snprintf(err, errlen, "not a txhash index file (bad magic)");
        return RS_OPEN_CORRUPT;
    }
    uint32_t version = rs_load32(buf + 8);
    if (version != RS_FILE_VERSION) {
        snprintf(err, errlen, "index format version %u is not supported (expected %u)", version, RS_FILE_VERSION);
        return RS_OPEN_UNSUPPORTED;
    }
    if (size < RS_HEADER_BYTES) {
        snprintf(err, errlen, "truncated (%llu bytes, the header needs %u)", (unsigned long long)size, RS_HEADER_BYTES);
        return RS_OPEN_CORRUPT;
    }
    const uint8_t *h = buf;
    uint64_t declared = rs_load64(h + 232);
    if (declared != size) {
        snprintf(err, errlen, "file is %llu bytes but its header declares %llu", (unsigned long long)size,
                 (unsigned long long)declared);
        return RS_OPEN_CORRUPT;
    }
    if (rs_load32(h + 12) != RS_HEADER_BYTES) {
        snprintf(err, errlen, "header size %u, expected %u", rs_load32(h + 12), RS_HEADER_BYTES);
        return RS_OPEN_CORRUPT;
    }
    uint32_t leaf = (uint32_t)h[36] | (uint32_t)h[37] << 8, lower = h[38], upper = h[39];
    uint32_t bsize = rs_load32(h + 40), sample = rs_load32(h + 44);
    if (leaf != RS_LEAF || lower != RS_LOWER_AGGR || upper != RS_UPPER_AGGR || bsize != RS_BUCKET_SIZE ||
        sample != RS_EF_SAMPLE) {
        snprintf(err, errlen, "parameters (%u, %u, %u, %u, %u) differ from this build's (%d, %d, %d, %d, %d)", leaf,
                 lower, upper, bsize, sample, RS_LEAF, RS_LOWER_AGGR, RS_UPPER_AGGR, RS_BUCKET_SIZE, RS_EF_SAMPLE);
        return RS_OPEN_UNSUPPORTED;
    }
    uint64_t n = rs_load64(h + 16), nb = rs_load64(h + 24);
    uint64_t vals_off, vals_len, bits_off, bits_len;
    if (rs_section(h, 64, size, "vals", &vals_off, &vals_len, err, errlen) ||
        rs_section(h, 80, size, "bits", &bits_off, &bits_len, err, errlen))
        return RS_OPEN_CORRUPT;
    /* vals_len <= size, so 4 * n cannot overflow once it matches */
    if (n > size / 4 || vals_len != 4 * n || nb != (n + RS_BUCKET_SIZE - 1) / RS_BUCKET_SIZE) {
        snprintf(err, errlen, "inconsistent key/bucket counts (%llu keys, %llu buckets, %llu value bytes)",
                 (unsigned long long)n, (unsigned long long)nb, (unsigned long long)vals_len);
        return RS_OPEN_CORRUPT;
    }
    uint64_t seed_bits = rs_load64(h + 96);
    if (bits_len / 8 < 1 || seed_bits > (bits_len / 8) * 64 - 64) {
        snprintf(err, errlen, "seed section of %llu bytes is shorter than its %llu bits plus one word",
                 (unsigned long long)bits_len, (unsigned long long)seed_bits);
        return RS_OPEN_CORRUPT;
    }
    if (rs_ef_open(buf, 104, size, nb + 1, "efk", &ix->ef_keys, err, errlen) ||
        rs_ef_open(buf, 168, size, nb + 1, "efb", &ix->ef_bits, err, errlen))
        return RS_OPEN_CORRUPT;
    rs_keys_init(&ix->K, rs_load64(h + 48), rs_load64(h + 56));
    ix->n_keys = n;
    ix->n_buckets = nb;
    ix->range_start = rs_load32(h + 32);
    ix->vals = (const uint32_t *)(buf + vals_off);
    ix->bits = (const uint64_t *)(buf + bits_off);
    ix->n_bits_words = bits_len / 8;
    ix->seed_bits = seed_bits;
    return RS_OPEN_OK;
}

#endif
