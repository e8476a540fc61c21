/* The reflection limit's bucket: a seeded hash of the SYN's source prefix.
 * Map-free; the GCRA state per bucket is in xdp_synguard.c (synack_tat).
 *
 * Buckets are picked by hash rather than kept per prefix in an LRU: a
 * random-source flood would churn an LRU with an insert per SYN, and
 * without the seed (random per attach) nobody can aim prefixes at one
 * bucket. Prefixes that share a bucket share its rate. */
#ifndef SG_RATELIMIT_H
#define SG_RATELIMIT_H

#include "maps.h"
#include "parse.h"

#define SG_RATELIMIT_BUCKETS 65536

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

static __always_inline u32 prefix_bucket(const struct sg_pkt *p,
					 const struct sg_config *cfg)
{
	u64 a, b = 0;

	if (p->ipv6) {
		u32 bits = cfg->prefix6;

		a = mask_bits(__builtin_bswap64(*(u64 *)&p->ip6->saddr), bits);
		if (bits > 64)
			b = mask_bits(
				__builtin_bswap64(*((u64 *)&p->ip6->saddr + 1)),
				bits - 64);
		b ^= 0x6; /* v4 and v6 prefixes of equal bits never share a value */
	} else {
		a = mask_bits((u64)bpf_ntohl(p->ip4->saddr) << 32,
			      cfg->prefix4);
	}
	return fmix64(fmix64(a ^ cfg->prefix_seed) ^ b) &
	       (SG_RATELIMIT_BUCKETS - 1);
}

#endif /* SG_RATELIMIT_H */
