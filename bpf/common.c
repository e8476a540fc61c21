/* SPDX-License-Identifier: GPL-2.0-only */
/* What more than one program uses that touches a map or a helper,
 * compiled first.
 *
 * bcc rewrites map calls (map.lookup()) only in the source text it is
 * given, never in included headers, and the loader hands it this file,
 * xdp_synguard.c, tc_handoff.c and syncache_timer.c as one text (one clang
 * run, the maps made once; controller/datapath.py). So code several
 * programs need lives here, once; map-free code lives in the headers.
 */
#include <uapi/linux/bpf.h>
#include "maps.h"
#include "parse.h"
#include "ratelimit.h"

/* Count an event of address family ipv6 (0 also for family-less ones). */
static __always_inline void count(u32 idx, u32 ipv6)
{
	u64 *c;

	idx += ipv6 ? SG_COUNTER_SLOTS : 0;
	c = counters.lookup(&idx);
	if (c)
		*c += 1; /* per-CPU slot: no atomic needed */
}

/* The segment's 4-tuple as the socket and conntrack kfuncs take it;
 * returns its size. */
static __always_inline u32 sock_tuple(const struct sg_pkt *p,
				      struct bpf_sock_tuple *t)
{
	if (p->ipv6) {
		__builtin_memcpy(t->ipv6.saddr, &p->ip6->saddr, 16);
		__builtin_memcpy(t->ipv6.daddr, &p->ip6->daddr, 16);
		t->ipv6.sport = p->tcp->source;
		t->ipv6.dport = p->tcp->dest;
		return sizeof(t->ipv6);
	}
	t->ipv4.saddr = p->ip4->saddr;
	t->ipv4.daddr = p->ip4->daddr;
	t->ipv4.sport = p->tcp->source;
	t->ipv4.dport = p->tcp->dest;
	return sizeof(t->ipv4);
}

/* The kernel's socket for the segment's 4-tuple: the established,
 * time-wait or request socket if there is one, else the listener; NULL if
 * none. ctx is the XDP or the tc context (the helper takes either). The
 * caller releases what it gets. */
static __always_inline struct bpf_sock *lookup_sock(void *ctx,
						    const struct sg_pkt *p)
{
	struct bpf_sock_tuple t = {};
	u32 size = sock_tuple(p, &t);

	return bpf_skc_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
}

/* The syncache's bookkeeping (XDP and the timer). Entry counts change
 * only here and in syncache_insert (xdp_synguard.c), always with atomics, so concurrent CPUs can overshoot a limit by at most one entry
 * each (the seed's cache_count is "XXX: unprotected" for the same reason). */

static __always_inline u32 *bucket_count(u32 bucket)
{
	return syncache_buckets.lookup(&bucket);
}

/* syncache_drop: remove the entry under key and give back its room. */
static __always_inline int syncache_drop(struct sg_flow *key, u32 bucket)
{
	u32 zero = 0, *b;
	struct sg_syncache_state *st;

	if (syncache.delete(key))
		return -1; /* someone else took it first */
	st = syncache_state.lookup(&zero);
	b = bucket_count(bucket);
	if (st)
		__sync_fetch_and_add(&st->entries, -1);
	if (b)
		__sync_fetch_and_add(b, -1);
	return 0;
}

/* One more reply (SYN-ACK, retransmission, RST) to src's prefix: 1 if it
 * fits the prefix's budget (the reflection limit), which it then spends;
 * 0 if it does not. Always 1 without a limit. */
static __always_inline int reply_budget(const struct sg_config *cfg,
					const struct sg_addr *src, u32 ipv6,
					u64 now)
{
	u32 idx;
	u64 *tat;

	if (!cfg->synack_interval_ns)
		return 1;
	idx = prefix_bucket(src, ipv6, cfg);
	tat = reply_tat.lookup(&idx);
	return !tat ||
	       gcra_take(tat, now, cfg->synack_interval_ns, cfg->synack_tau_ns);
}
