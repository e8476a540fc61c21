/* synguard XDP hook: the seed's syncache and SYN cookies at the driver.
 *
 * For TCP to a protected port (listeners map) where the kernel has a
 * listener and no other socket for the 4-tuple (else XDP_PASS):
 *   SYN  syncache_add: answered in place with our SYN-ACK (XDP_TX), its ISS
 *        always a cookie; an entry is kept when there is room (cachelimit,
 *        bucketlimit, not paused, not syncookies_only). A SYN for an entry
 *        is answered from the entry again (dupsyn). The kernel never sees
 *        a SYN.
 *   ACK  syncache_expand: an entry must match exactly, else it is dropped
 *        (badack) and the cookie decides: a valid one goes on with its
 *        attributes in the metadata area, where tc_handoff.c turns them
 *        into a request socket (bpf_sk_assign_tcp_reqsk); a bad one is
 *        dropped.
 *   RST  syncache_chkrst: an in-window RST removes the entry.
 * ICMP/ICMPv6 unreachable quoting our SYN-ACK: syncache_unreach.
 * Anything else passes untouched. Retransmissions and expiry are the
 * controller's (controller/syncache.py), which removes entries through
 * synguard_syncache_drop below.
 * See cookie.h for the cookie, maps.h for the maps and counters.
 */
#include <uapi/linux/bpf.h>
#include "maps.h"
#include "parse.h"
#include "cookie.h"
#include "csum.h"

#define SG_TCP_LISTEN 10 /* enum tcp_state in include/net/tcp_states.h */
#define SG_TH_FIN 0x01
#define SG_TH_SYN 0x02
#define SG_TH_RST 0x04
#define SG_TH_ACK 0x10
#define SG_IP_DF  0x4000
#define SG_PAUSE_MAX_BACKOFF 6 /* FreeBSD's TCP_SYNCACHE_MAX_BACKOFF */
#define SG_MS 1000000ULL

_Static_assert(SG_CF_WSCALE == SG_HAS_WSCALE && SG_CF_SACK == SG_HAS_SACK &&
	       SG_CF_TIMESTAMPS == SG_HAS_TS,
	       "config switches and option flags share bits");

/* Count an event of address family ipv6 (0 also for family-less ones).
 * bcc rewrites map calls only in the main file and not inside macros, so
 * each hook's file has this function; the loader compiles both files as one
 * module, where the second copy is skipped. */
#ifndef SG_HAVE_COUNT
#define SG_HAVE_COUNT
static __always_inline void count(u32 idx, u32 ipv6)
{
	u64 *c;

	idx += ipv6 ? SG_COUNTER_SLOTS : 0;
	c = counters.lookup(&idx);
	if (c)
		*c += 1; /* per-CPU slot: no atomic needed */
}
#endif

/* Parsed options and the entry being built live in a per-CPU scratch slot,
 * not on the stack. The verifier tracks stack values exactly, so option
 * flags set from constants while scanning would be known per path, every
 * later `if` on them decided, and the decisions would make the scan's
 * states distinct (no pruning; the 1M-instruction limit). Map memory is
 * never tracked: reads are unknown. It also keeps the stack under 512. */
struct sg_scratch {
	struct sg_tcpopts o;
	struct sg_syncache_entry e;
};
BPF_PERCPU_ARRAY(scratch, struct sg_scratch, 1);

/* Connections handed off in the last few milliseconds, by 4-tuple. A NAPI
 * poll runs XDP (and a list receive runs tc) over a whole batch before TCP
 * sees any of it, so segments right behind the third ACK find no socket
 * yet: the first data segment also carries a valid cookie and would get a
 * second request socket (the kernel drops it as a duplicate), the later
 * ones carry none and would be dropped here. Either way the client waits
 * out a retransmission timeout. So segments of a 4-tuple handed off less
 * than SG_HANDOFF_WINDOW_NS ago go up plain and find the new socket. The
 * window is far below the minimum RTO (200 ms), so a retransmission after
 * a failed hand-off is handed off again. */
#define SG_HANDOFF_WINDOW_NS (10 * SG_MS)
BPF_TABLE("lru_hash", struct sg_flow, u64, handoffs, 65536);

static __always_inline int handed_off_recently(struct sg_flow *k, u64 now)
{
	u64 *last = handoffs.lookup(k);

	return last && now - *last < SG_HANDOFF_WINDOW_NS;
}

/* The reflection limit: SYN-ACKs per source prefix, so that a flood of
 * SYNs spoofed from a victim's addresses cannot turn us into a SYN-ACK
 * cannon aimed at it. GCRA (one "theoretical arrival time" per bucket)
 * over an array of buckets picked by a seeded hash of the prefix: no map
 * insert per SYN (a random-source flood would churn an LRU), and without
 * the seed nobody can aim prefixes at a bucket. Prefixes that share a
 * bucket share its rate. Updates race between CPUs; that can let a burst
 * overshoot by one SYN-ACK per CPU, never block a prefix for longer. */
#define SG_RATELIMIT_BUCKETS 65536
BPF_ARRAY(synack_tat, u64, SG_RATELIMIT_BUCKETS);

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

static __always_inline int synack_allowed(struct sg_pkt *p,
					  const struct sg_config *cfg, u64 now)
{
	u64 a, b = 0, t, *tat;
	u32 idx;

	if (!cfg->synack_interval_ns)
		return 1;
	if (p->ipv6) {
		u32 bits = cfg->prefix6;

		a = mask_bits(__builtin_bswap64(*(u64 *)&p->ip6->saddr), bits);
		if (bits > 64)
			b = mask_bits(__builtin_bswap64(*((u64 *)&p->ip6->saddr + 1)), bits - 64);
		b ^= 0x6; /* v4 and v6 prefixes of equal bits never share a value */
	} else {
		a = mask_bits((u64)bpf_ntohl(p->ip4->saddr) << 32, cfg->prefix4);
	}
	idx = fmix64(fmix64(a ^ cfg->prefix_seed) ^ b) & (SG_RATELIMIT_BUCKETS - 1);
	tat = synack_tat.lookup(&idx);
	if (!tat)
		return 1;
	t = *tat > now ? *tat : now;
	if (t - now > cfg->synack_tau_ns)
		return 0;
	*tat = t + cfg->synack_interval_ns;
	return 1;
}

/* The flow's 4-tuple without the ISN: the key of handoffs and syncache. */
static __always_inline void tuple_key(const struct sg_flow *f, struct sg_flow *k)
{
	*k = *f;
	k->w[f->ipv6 ? 4 : 1] &= 0xffffffff; /* keep the ports, drop seq */
}

/* State of the kernel's socket for the packet's 4-tuple: established,
 * time-wait or request socket if there is one, else the listener; -1 when
 * there is none at all. */
static __always_inline int lookup_state(struct xdp_md *ctx, struct sg_pkt *p)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	int state;

	if (p->ipv6) {
		__builtin_memcpy(t.ipv6.saddr, &p->ip6->saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, &p->ip6->daddr, 16);
		t.ipv6.sport = p->tcp->source;
		t.ipv6.dport = p->tcp->dest;
		sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv6),
					BPF_F_CURRENT_NETNS, 0);
	} else {
		t.ipv4.saddr = p->ip4->saddr;
		t.ipv4.daddr = p->ip4->daddr;
		t.ipv4.sport = p->tcp->source;
		t.ipv4.dport = p->tcp->dest;
		sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv4),
					BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return -1;
	state = sk->state;
	bpf_sk_release(sk);
	return state;
}

/* The cookie's input words from the packet: addresses, then ports | seq
 * with seq = the client's ISN (the SYN's seq, or an ACK's seq - 1). */
static __always_inline void flow_from_pkt(struct sg_pkt *p, u32 isn,
					  struct sg_flow *f)
{
	u64 ports_seq = (u64)*(u32 *)p->tcp | (u64)bpf_htonl(isn) << 32;

	f->ipv6 = p->ipv6;
	if (p->ipv6) {
		__builtin_memcpy(f->w, &p->ip6->saddr, 32);
		f->w[4] = ports_seq;
	} else {
		f->w[0] = *(u64 *)&p->ip4->saddr; /* saddr, daddr */
		f->w[1] = ports_seq;
	}
}

/* A protected port with no listener, or a 4-tuple the kernel owns. */
static __always_inline int leave_to_kernel(int state, u32 ipv6)
{
	count(state < 0 ? SG_C_nolistener : SG_C_established, ipv6);
	return XDP_PASS;
}

/* --- the syncache's bookkeeping --------------------------------------------
 * Entry counts change only here and in synguard_syncache_drop, always with
 * atomics, so concurrent CPUs can overshoot a limit by at most one entry
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

/* FreeBSD's syncache_pause (after r178285): on overflow use cookies only
 * for pause_ms, doubled (up to 2^6 times) when the last pause ended less
 * than one pause length ago. */
static __always_inline void syncache_pause(struct sg_syncache_state *st,
					   const struct sg_config *cfg, u64 now)
{
	u64 delta;
	u32 backoff = st->backoff;

	if (!cfg->pause_ms || now < st->pause_until_ns)
		return; /* pausetime 0: never pause */
	delta = ((u64)cfg->pause_ms * SG_MS) << (backoff & 7);
	if (st->pause_until_ns && now - st->pause_until_ns < delta) {
		if (backoff < SG_PAUSE_MAX_BACKOFF) {
			delta <<= 1;
			backoff++;
		}
	} else {
		delta = (u64)cfg->pause_ms * SG_MS;
		backoff = 0;
	}
	st->backoff = backoff;
	st->pause_until_ns = now + delta;
	st->pauses++;
}

/* syncache_insert, with room checked first: 0 when the entry is in. */
static __always_inline int syncache_insert(struct sg_flow *key,
					   struct sg_syncache_entry *e,
					   const struct sg_config *cfg, u64 now)
{
	u32 zero = 0, *b = bucket_count(e->bucket);
	struct sg_syncache_state *st = syncache_state.lookup(&zero);
	u32 overflow;

	if (!st || !b)
		return -1;
	if (now < st->pause_until_ns)
		return -1; /* paused: cookies only */
	if (st->entries >= cfg->cachelimit)
		overflow = SG_C_zonefail;
	else if (*b >= cfg->bucketlimit)
		overflow = SG_C_bucketoverflow;
	else {
		__sync_fetch_and_add(&st->entries, 1);
		__sync_fetch_and_add(b, 1);
		if (!syncache.insert(key, e)) {
			count(SG_C_added, key->ipv6);
			return 0;
		}
		/* The map is full or out of memory: the zone failed. */
		__sync_fetch_and_add(&st->entries, -1);
		__sync_fetch_and_add(b, -1);
		overflow = SG_C_zonefail;
	}
	count(overflow, key->ipv6);
	syncache_pause(st, cfg, now);
	return -1;
}

/* --- the SYN-ACK -------------------------------------------------------- */

/* What our SYN-ACK says, fresh from a SYN or again from an entry. */
struct sg_synack {
	u32 iss, ack;
	u32 tsval, tsecr;  /* host order; used when ts */
	u32 flowlabel;
	u16 mss, window;
	u8 ws_on, wscale, sack, ts, ttl;
};

/* syncache_respond: rewrite the frame in place into our SYN-ACK. Options
 * in Linux's order (MSS, SACK-permitted + timestamps, window scale) so it
 * looks like a Linux SYN-ACK to middleboxes. f holds the SYN's addresses
 * and ports. 0: ready for XDP_TX; -1: the driver cannot resize the frame
 * (untouched); -2: the verifier's bounds (cannot happen; frame changed). */
static __always_inline int write_synack(struct xdp_md *ctx, u32 l3_off,
					u32 frame_len, const struct sg_flow *f,
					const struct sg_synack *sa)
{
	u32 optlen, ip_len, tcp_len, new_len, ports;
	u64 sum, addr_sum;
	void *data, *data_end;
	struct tcphdr *tcp;
	u32 *op;

	/* MSS, then SACK-permitted + timestamps (12) or NOP NOP SACK-permitted
	 * (4), then NOP window-scale (4). */
	optlen = 4 + 12 * sa->ts + 4 * (sa->sack & (sa->ts ^ 1)) + 4 * sa->ws_on;
	tcp_len = sizeof(struct tcphdr) + optlen;
	ip_len = f->ipv6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	new_len = l3_off + ip_len + tcp_len;
	/* IP options, a payload or padding in the SYN are not echoed. */
	if (new_len != frame_len &&
	    bpf_xdp_adjust_tail(ctx, (int)new_len - (int)frame_len))
		return -1;

	/* adjust_tail invalidated every packet pointer: start again. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (l3_off > 22) /* 14 + two VLAN tags; bounds the offset for the verifier */
		return -2;
	{
		struct ethhdr *eth = data;
		u8 mac[ETH_ALEN];

		if ((void *)(eth + 1) > data_end)
			return -2;
		__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	}

	if (f->ipv6) {
		struct ipv6hdr *ip6 = data + l3_off;

		tcp = (void *)(ip6 + 1);
		if ((void *)(tcp + 1) > data_end)
			return -2;
		*(__be32 *)ip6 = bpf_htonl(0x60000000 | sa->flowlabel);
		ip6->payload_len = bpf_htons(tcp_len);
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = sa->ttl;
		__builtin_memcpy(&ip6->saddr, &f->w[2], 16);
		__builtin_memcpy(&ip6->daddr, &f->w[0], 16);
		addr_sum = (f->w[0] & 0xffffffff) + (f->w[0] >> 32) +
			   (f->w[1] & 0xffffffff) + (f->w[1] >> 32) +
			   (f->w[2] & 0xffffffff) + (f->w[2] >> 32) +
			   (f->w[3] & 0xffffffff) + (f->w[3] >> 32);
		ports = (u32)f->w[4];
	} else {
		struct iphdr *ip = data + l3_off;

		tcp = (void *)(ip + 1);
		if ((void *)(tcp + 1) > data_end)
			return -2;
		*(u16 *)ip = bpf_htons(0x4500); /* version 4, ihl 5, tos 0 */
		ip->tot_len = bpf_htons(ip_len + tcp_len);
		ip->id = 0;
		ip->frag_off = bpf_htons(SG_IP_DF);
		ip->ttl = sa->ttl;
		ip->protocol = IPPROTO_TCP;
		ip->saddr = f->w[0] >> 32;
		ip->daddr = (u32)f->w[0];
		addr_sum = (f->w[0] & 0xffffffff) + (f->w[0] >> 32);
		ip->check = sg_csum_fold(bpf_htons(0x4500) +
					 bpf_htons(ip_len + tcp_len) +
					 bpf_htons(SG_IP_DF) +
					 bpf_htons((u16)sa->ttl << 8 | IPPROTO_TCP) +
					 addr_sum);
		ports = (u32)f->w[1];
	}

	/* TCP header: ports swapped. */
	*(u32 *)tcp = ports >> 16 | ports << 16;
	tcp->seq = bpf_htonl(sa->iss);
	tcp->ack_seq = bpf_htonl(sa->ack);
	*((u16 *)tcp + 6) = bpf_htons((tcp_len / 4) << 12 | SG_TH_SYN | SG_TH_ACK);
	tcp->window = bpf_htons(sa->window);
	tcp->urg_ptr = 0;
	sum = sg_csum_pseudo(addr_sum, tcp_len) + ports + tcp->seq +
	      tcp->ack_seq + *((u16 *)tcp + 6) + tcp->window;

	/* Options, one 32-bit word at a time, each checked against the end. */
	op = (void *)(tcp + 1);
	if ((void *)(op + 1) > data_end)
		return -2;
	op[0] = bpf_htonl(SG_OPT_MSS << 24 | 4 << 16 | sa->mss);
	sum += op[0];
	if (sa->ts) {
		if ((void *)(op + 4) > data_end)
			return -2;
		op[1] = bpf_htonl(sa->sack ? 0x0402080a : 0x0101080a);
		op[2] = bpf_htonl(sa->tsval);
		op[3] = bpf_htonl(sa->tsecr);
		sum += (u64)op[1] + op[2] + op[3];
		op += 4;
	} else if (sa->sack) {
		if ((void *)(op + 2) > data_end)
			return -2;
		op[1] = bpf_htonl(0x01010402);
		sum += op[1];
		op += 2;
	} else {
		op += 1;
	}
	if (sa->ws_on) {
		if ((void *)(op + 1) > data_end)
			return -2;
		*op = bpf_htonl(0x01030300 | sa->wscale);
		sum += *op;
	}
	tcp->check = sg_csum_fold(sum);
	return 0;
}

static __always_inline int send_synack(struct xdp_md *ctx, struct sg_pkt *p,
				       const struct sg_flow *f,
				       const struct sg_synack *sa, u32 counter)
{
	int r = write_synack(ctx, p->l3_off, p->frame_len, f, sa);

	if (r == -1) {
		count(SG_C_unsupported, f->ipv6);
		return XDP_PASS;
	}
	if (r)
		return XDP_ABORTED;
	count(counter, f->ipv6);
	return XDP_TX;
}

/* --- SYN: syncache_add ---------------------------------------------------- */

static __always_inline int handle_syn(struct xdp_md *ctx, struct sg_pkt *p,
				      const struct sg_config *cfg,
				      const struct sg_secrets *sec)
{
	struct sg_synack sa = {};
	struct sg_flow f = {}, key;
	struct sg_scratch *s;
	struct sg_tcpopts *o;
	struct sg_syncache_entry *e;
	u32 our_mss, mss_out, mss_idx, ws_idx, offered, meta, slot, isn;
	u32 zero = 0, keep = cfg->syncookies_only == 0 || cfg->syncookies == 0;
	u32 l2_len;
	u8 ipv6 = p->ipv6;
	u64 h, now;
	int state, r;

	state = lookup_state(ctx, p);
	if (state != SG_TCP_LISTEN)
		return leave_to_kernel(state, p->ipv6);
	now = bpf_ktime_get_ns();
	if (!synack_allowed(p, cfg, now)) {
		count(SG_C_ratelimited, ipv6);
		return XDP_DROP;
	}

	s = scratch.lookup(&zero);
	if (!s)
		return XDP_PASS;
	o = &s->o;
	o->mss = ipv6 ? SG_MSS_DEFAULT6 : SG_MSS_DEFAULT4; /* no MSS option */
	parse_tcp_options(ctx, p->l4_off, p->tcp->doff * 4, o);
	isn = bpf_ntohl(p->tcp->seq);
	flow_from_pkt(p, isn, &f);
	tuple_key(&f, &key);

	/* A SYN for an entry: the same SYN-ACK again (same ISS), the retransmit
	 * counter reset and, as the seed does, the client's timestamp taken
	 * up (or timestamps dropped if this SYN has none). */
	e = keep ? syncache.lookup(&key) : NULL;
	if (e) {
		if ((e->flags & SG_SCF_TIMESTAMP) && (o->flags & SG_HAS_TS))
			e->ts_recent = bpf_ntohl(o->tsval);
		else
			e->flags &= ~SG_SCF_TIMESTAMP;
		e->rxmits = 0;
		e->rxt_ns = now + (u64)cfg->rexmt_ms * SG_MS;
		sa.iss = e->iss;
		sa.ack = e->irs + 1;
		sa.mss = e->mss;
		sa.window = e->wnd;
		sa.ttl = e->ttl;
		sa.flowlabel = e->flowlabel;
		sa.ws_on = !!(e->flags & SG_SCF_WINSCALE);
		sa.wscale = e->rcv_wscale;
		sa.sack = !!(e->flags & SG_SCF_SACK);
		sa.ts = !!(e->flags & SG_SCF_TIMESTAMP);
		sa.tsval = e->ts;
		sa.tsecr = e->ts_recent;
		return send_synack(ctx, p, &f, &sa, SG_C_dupsyn);
	}

	/* What we answer with: the peer's offer, masked by what the kernel's
	 * sysctls let the hand-off accept (same bits), without branches. */
	offered = o->flags & cfg->flags;
	sa.ws_on = (offered & SG_HAS_WSCALE) >> 1;
	sa.sack = (offered & SG_HAS_SACK) >> 2;
	sa.ts = (offered & SG_HAS_TS) >> 3;
	sa.wscale = cfg->wscale;
	ws_idx = sg_wscale_index(sa.ws_on, o->wscale);

	our_mss = ipv6 ? cfg->mss6 : cfg->mss4;
	mss_out = o->mss < our_mss ? o->mss : our_mss;
	mss_idx = sg_mss_index(mss_out, ipv6);
	if (mss_out < sg_mss_value(0, ipv6))
		mss_out = sg_mss_value(0, ipv6);

	slot = sec->active & 1;
	meta = mss_idx << 5 | ws_idx << 2 | sa.sack << 1 | slot;
	h = sg_cookie_hash(&sec->keys[slot], &f, meta);
	sa.iss = sg_cookie_iss(h, meta);
	sa.ack = isn + 1;
	sa.mss = mss_out;
	sa.window = cfg->window;
	sa.ttl = cfg->ttl;
	sa.flowlabel = ipv6 ? (h >> 24) & 0xfffff : 0;
	sa.tsecr = bpf_ntohl(o->tsval);
	if (sa.ts) /* ~1 ms clock with a keyed per-connection offset */
		sa.tsval = (u32)(h >> 32) + (u32)(now >> 20);

	r = -1;
	if (keep) {
		e = &s->e;
		e->added_ns = now;
		e->rxt_ns = now + (u64)cfg->rexmt_ms * SG_MS;
		e->irs = isn;
		e->iss = sa.iss;
		e->ts = sa.tsval;
		e->ts_recent = sa.tsecr;
		e->flowlabel = sa.flowlabel;
		e->peer_mss = o->mss;
		e->mss = sa.mss;
		e->wnd = sa.window;
		e->bucket = (h >> 44) & (SG_SYNCACHE_BUCKETS - 1);
		e->snd_wscale = o->wscale;
		e->rcv_wscale = sa.wscale;
		e->flags = (sa.ws_on ? SG_SCF_WINSCALE : 0) |
			   (sa.ts ? SG_SCF_TIMESTAMP : 0) |
			   (sa.sack ? SG_SCF_SACK : 0);
		e->rxmits = 0;
		e->ttl = sa.ttl;
		/* Our SYN-ACK's L2 header is the SYN's with the MACs swapped;
		 * the controller replays it for retransmissions. */
		l2_len = p->l3_off;
		if (l2_len > sizeof(e->l2) ||
		    bpf_xdp_load_bytes(ctx, 0, e->l2, l2_len))
			return XDP_PASS;
		e->l2_len = l2_len;
		{
			u8 mac[ETH_ALEN];

			__builtin_memcpy(mac, e->l2, ETH_ALEN);
			__builtin_memcpy(e->l2, e->l2 + ETH_ALEN, ETH_ALEN);
			__builtin_memcpy(e->l2 + ETH_ALEN, mac, ETH_ALEN);
		}
		r = syncache_insert(&key, e, cfg, now);
	}
	if (r && !cfg->syncookies) {
		/* No entry and no cookies: the seed sends nothing. */
		count(SG_C_dropped, ipv6);
		return XDP_DROP;
	}
	r = write_synack(ctx, p->l3_off, p->frame_len, &f, &sa);
	if (r == -1) {
		/* The kernel answers this SYN itself: no entry of ours. */
		if (keep)
			syncache_drop(&key, s->e.bucket);
		count(SG_C_unsupported, ipv6);
		return XDP_PASS;
	}
	if (r)
		return XDP_ABORTED;
	count(SG_C_sendcookie, ipv6);
	return XDP_TX;
}

/* --- ACK: syncache_expand ------------------------------------------------- */

/* Put the request socket's attributes in front of the frame for tc. */
static __always_inline int hand_off(struct xdp_md *ctx,
				    const struct sg_tcp_req_attrs *attrs,
				    struct sg_flow *key, u64 now, u32 counter)
{
	struct sg_handoff *m;

	handoffs.update(key, &now);
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct sg_handoff))) {
		count(SG_C_unsupported, key->ipv6); /* the driver has no metadata area */
		return XDP_PASS;
	}
	m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return XDP_ABORTED;
	m->magic = SG_HANDOFF_MAGIC;
	__builtin_memcpy(&m->attrs, attrs, sizeof(*attrs));
	count(counter, key->ipv6);
	return XDP_PASS;
}

static __always_inline int handle_ack(struct xdp_md *ctx, struct sg_pkt *p,
				      const struct sg_config *cfg,
				      const struct sg_secrets *sec)
{
	struct sg_tcp_req_attrs attrs = {};
	struct sg_flow f = {}, key;
	struct sg_syncache_entry *e;
	struct sg_scratch *s;
	struct sg_tcpopts *o;
	u32 cookie, isn, zero = 0, has_ts, ok;
	u8 meta, ws_idx, ipv6 = p->ipv6;
	u64 h, now;
	int state;

	state = lookup_state(ctx, p);
	if (state != SG_TCP_LISTEN)
		return leave_to_kernel(state, p->ipv6);

	cookie = bpf_ntohl(p->tcp->ack_seq) - 1;
	isn = bpf_ntohl(p->tcp->seq) - 1;
	flow_from_pkt(p, isn, &f);
	tuple_key(&f, &key);
	now = bpf_ktime_get_ns();
	s = scratch.lookup(&zero);
	if (!s)
		return XDP_PASS;
	o = &s->o;

	e = syncache.lookup(&key);
	if (e) {
		/* Take the entry out first, as the seed does, then check it:
		 * ACK = ISS + 1, SEQ = IRS + 1, timestamps iff negotiated and
		 * TSecr = what we sent. */
		struct sg_syncache_entry c = *e;

		syncache_drop(&key, c.bucket);
		parse_tcp_options(ctx, p->l4_off, p->tcp->doff * 4, o);
		has_ts = !!(o->flags & SG_HAS_TS);
		ok = cookie == c.iss && isn == c.irs &&
		     has_ts == !!(c.flags & SG_SCF_TIMESTAMP) &&
		     (!has_ts || bpf_ntohl(o->tsecr) == c.ts);
		if (ok) {
			attrs.mss = c.peer_mss < sg_mss_value(0, ipv6) ?
					    sg_mss_value(0, ipv6) : c.peer_mss;
			attrs.sack_ok = !!(c.flags & SG_SCF_SACK);
			if (c.flags & SG_SCF_WINSCALE) {
				attrs.wscale_ok = 1;
				attrs.snd_wscale = c.snd_wscale;
				attrs.rcv_wscale = c.rcv_wscale;
			}
			if (has_ts) {
				attrs.tstamp_ok = 1;
				attrs.rcv_tsval = bpf_ntohl(o->tsval);
				attrs.rcv_tsecr = c.ts;
			}
			return hand_off(ctx, &attrs, &key, now, SG_C_expanded);
		}
		/* syncache_badack; the cookie may still vouch for it. */
		count(SG_C_badack, ipv6);
	}

	if (!cfg->syncookies) {
		count(SG_C_badcookie, ipv6); /* no entry and no cookies: rejected */
		return XDP_DROP;
	}
	meta = cookie & 0xff;
	/* The slot bit picks the key: the current one or the previous one.
	 * A key older than that has been overwritten, so its cookies fail. In
	 * fleet mode the other parity may also be the next epoch's key (a host
	 * whose clock runs ahead minted it): a second hash, for those only. */
	h = sg_cookie_hash(&sec->keys[SG_META_SLOT(meta)], &f, meta);
	if (cookie >> 8 != (u32)(h & 0xffffff) && sec->fleet &&
	    SG_META_SLOT(meta) != (sec->active & 1))
		h = sg_cookie_hash(&sec->ahead, &f, meta);
	if (cookie >> 8 != (u32)(h & 0xffffff)) {
		/* Only segments with data or FIN can trail a hand-off; a bogus
		 * pure ACK costs no map lookup. */
		if ((p->l4_len > p->tcp->doff * 4 || p->tcp->fin) &&
		    handed_off_recently(&key, now)) {
			count(SG_C_coalesced, ipv6);
			return XDP_PASS;
		}
		count(SG_C_badcookie, ipv6);
		return XDP_DROP;
	}
	if (handed_off_recently(&key, now)) {
		count(SG_C_coalesced, ipv6);
		return XDP_PASS;
	}

	/* Timestamps were negotiated iff the ACK carries them (we echo the
	 * option whenever the client offers it and the sysctl allows). */
	parse_tcp_options(ctx, p->l4_off, p->tcp->doff * 4, o);
	ws_idx = SG_META_WS(meta);
	attrs.mss = sg_mss_value(SG_META_MSS(meta), ipv6);
	attrs.sack_ok = SG_META_SACK(meta);
	if (ws_idx) {
		attrs.wscale_ok = 1;
		attrs.snd_wscale = sg_wscale_value(ws_idx);
		attrs.rcv_wscale = cfg->wscale;
	}
	if (o->flags & cfg->flags & SG_HAS_TS) {
		attrs.tstamp_ok = 1;
		attrs.rcv_tsval = bpf_ntohl(o->tsval);
		attrs.rcv_tsecr = bpf_ntohl(o->tsecr);
	}
	return hand_off(ctx, &attrs, &key, now, SG_C_recvcookie);
}

/* --- RST: syncache_chkrst ------------------------------------------------- */

static __always_inline int handle_rst(struct xdp_md *ctx, struct sg_pkt *p,
				      u8 flags)
{
	struct sg_syncache_entry *e;
	struct sg_flow f = {}, key;
	int state = lookup_state(ctx, p);

	if (state != SG_TCP_LISTEN)
		return leave_to_kernel(state, p->ipv6);
	flow_from_pkt(p, 0, &f);
	tuple_key(&f, &key);
	e = syncache.lookup(&key);
	/* Any RST to our SYN-ACK must not carry ACK, SYN or FIN (RFC 793
	 * p. 65); a valid one has SEQ in [IRS, IRS + WND] (RFC 793 p. 37).
	 * Either way the kernel's listener ignores it after us. */
	if (!(flags & (SG_TH_ACK | SG_TH_SYN | SG_TH_FIN)) && e &&
	    bpf_ntohl(p->tcp->seq) - e->irs <= e->wnd &&
	    !syncache_drop(&key, e->bucket)) {
		count(SG_C_reset, p->ipv6);
		return XDP_PASS;
	}
	count(SG_C_badrst, p->ipv6);
	return XDP_PASS;
}

/* --- ICMP: syncache_unreach ----------------------------------------------- */

static __always_inline void handle_icmp(struct xdp_md *ctx, struct sg_pkt *p,
					const struct sg_config *cfg)
{
	struct sg_syncache_entry *e;
	struct sg_flow key = {};
	u32 seq, *protected, port32;
	u16 port;

	if (parse_icmp_unreach(ctx, p, &key, &seq, &port))
		return;
	port32 = port;
	protected = listeners.lookup(&port32);
	if (!protected || !*protected)
		return;
	e = syncache.lookup(&key);
	/* Not about our SYN-ACK (SEQ != ISS): bogus. */
	if (!e || seq != e->iss)
		return;
	/* Remove the entry only on a second error after the retransmissions
	 * ran out, so that a short outage does not kill it (the seed). */
	if (!(e->flags & SG_SCF_UNREACH) || e->rxmits < cfg->rexmtlimit) {
		e->flags |= SG_SCF_UNREACH;
		return;
	}
	if (!syncache_drop(&key, e->bucket))
		count(SG_C_unreach, key.ipv6);
}

int synguard_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sg_config *cfg;
	struct sg_secrets *sec;
	struct sg_pkt p = {};
	u32 zero = 0, port, *protected;
	u8 flags;
	int r;

	count(SG_C_packets, 0);
	r = parse_pkt(data, data_end, &p);
	if (r == SG_PARSE_MALFORMED) {
		count(SG_C_malformed, 0);
		return XDP_PASS;
	}
	cfg = config.lookup(&zero);
	if (!cfg)
		goto pass;
	if (r == SG_PARSE_ICMP) {
		handle_icmp(ctx, &p, cfg);
		goto pass;
	}
	if (r != SG_PARSE_TCP)
		goto pass;

	port = bpf_ntohs(p.tcp->dest);
	protected = listeners.lookup(&port);
	sec = secrets.lookup(&zero);
	if (!protected || !*protected || !sec)
		goto pass;

	flags = ((u8 *)p.tcp)[13];
	if ((flags & (SG_TH_SYN | SG_TH_ACK | SG_TH_RST | SG_TH_FIN)) == SG_TH_SYN)
		return handle_syn(ctx, &p, cfg, sec);
	if (flags & SG_TH_RST)
		return handle_rst(ctx, &p, flags);
	if ((flags & (SG_TH_SYN | SG_TH_ACK)) == SG_TH_ACK)
		return handle_ack(ctx, &p, cfg, sec);
pass:
	count(SG_C_passed, 0);
	return XDP_PASS;
}

/* Not attached anywhere: the controller runs it with BPF_PROG_TEST_RUN to
 * remove syncache entries (stale ones, after rexmtlimit), so that entry
 * counts stay in one place and atomic. The frame is a list of records;
 * each record's status byte is set to 1 if its entry was removed (the
 * controller reads the output frame). */
struct sg_drop_record {
	struct sg_flow key;
	u32 bucket;
	u8 removed;
	u8 pad[3];
};
#define SG_DROP_BATCH 64

int synguard_syncache_drop(struct xdp_md *ctx)
{
	struct sg_drop_record r;
	u32 off = 0;

	for (int i = 0; i < SG_DROP_BATCH; i++) {
		if (bpf_xdp_load_bytes(ctx, off, &r, sizeof(r)))
			break;
		r.removed = !syncache_drop(&r.key, r.bucket);
		bpf_xdp_store_bytes(ctx, off + __builtin_offsetof(struct sg_drop_record, removed),
				    &r.removed, 1);
		off += sizeof(r);
	}
	return XDP_PASS;
}
