/* SPDX-License-Identifier: GPL-2.0-only */
/* The reflection limit's arithmetic, map-free: which bucket a source
 * prefix falls in, and GCRA over one bucket's "theoretical arrival time"
 * (the reply_tat map and its users are in common.c and xdp_synguard.c).
 *
 * Buckets are picked by hash rather than kept per prefix in an LRU: a
 * random-source flood would churn an LRU with an insert per SYN, and
 * without the seed (random per attach) nobody can aim prefixes at one
 * bucket. Prefixes that share a bucket share its rate. */
#ifndef SG_RATELIMIT_H
#define SG_RATELIMIT_H

#include "maps.h"

static __always_inline u64 mask_bits(u64 v, u32 bits) /* keep the top bits */
{
	if (bits >= 64)
		return v;
	return bits ? v & (~0ULL << (64 - bits)) : 0;
}

/* murmur3's 64-bit finaliser: every input bit reaches every output bit, so
 * prefixes whose low bits are all zero still spread over the buckets. */
static __always_inline u64 fmix64(u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* The bucket of a source address's prefix (prefix4 or prefix6 bits). */
static __always_inline u32 prefix_bucket(const struct sg_addr *src, u32 ipv6,
					 const struct sg_config *cfg)
{
	u64 a, b = 0;

	if (ipv6) {
		u32 bits = cfg->prefix6;

		a = mask_bits(__builtin_bswap64(src->w[0]), bits);
		if (bits > 64)
			b = mask_bits(__builtin_bswap64(src->w[1]), bits - 64);
		b ^= 0x6; /* v4 and v6 prefixes of equal bits never share a value */
	} else {
		a = mask_bits((u64)bpf_ntohl((u32)(src->w[1] >> 32)) << 32,
			      cfg->prefix4);
	}
	return fmix64(fmix64(a ^ cfg->prefix_seed) ^ b) &
	       (SG_RATELIMIT_BUCKETS - 1);
}

/* GCRA: a reply at now fits if the bucket's arrival time is at most tau
 * ahead of it. */
static __always_inline int gcra_fits(u64 tat, u64 now, u64 tau)
{
	return tat <= now || tat - now <= tau;
}

/* Spend one reply: 1 if it fits (tat moved on by interval), else 0 and
 * nothing changed. Updates race between CPUs; that can let a burst
 * overshoot by one reply per CPU, never block a prefix for longer. */
static __always_inline int gcra_take(u64 *tat, u64 now, u64 interval, u64 tau)
{
	u64 t = *tat > now ? *tat : now;

	if (t - now > tau)
		return 0;
	*tat = t + interval;
	return 1;
}

/* Give one reply back (its handshake completed): never below now, so a
 * bucket cannot save up more than its burst. */
static __always_inline void gcra_give_back(u64 *tat, u64 now, u64 interval)
{
	u64 t = *tat;

	if (t > now)
		*tat = t - now > interval ? t - interval : now;
}

#endif /* SG_RATELIMIT_H */
