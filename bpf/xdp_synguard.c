/* synguard XDP hook: SYN cookies at the driver.
 *
 * For TCP to a protected port (listeners map):
 *   SYN            -> the kernel has a listener and no other socket for the
 *                     4-tuple: rewrite the frame into our cookie SYN-ACK,
 *                     XDP_TX. The kernel never sees the SYN.
 *   ACK            -> the kernel has a socket for the 4-tuple: XDP_PASS.
 *                     Else check the cookie in ack-1: bad -> XDP_DROP;
 *                     good -> put the connection's attributes in the
 *                     metadata area and XDP_PASS; tc_handoff.c turns them
 *                     into a request socket (bpf_sk_assign_tcp_reqsk).
 *   anything else  -> XDP_PASS untouched.
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

_Static_assert(SG_CF_WSCALE == SG_HAS_WSCALE && SG_CF_SACK == SG_HAS_SACK &&
	       SG_CF_TIMESTAMPS == SG_HAS_TS,
	       "config switches and option flags share bits");

static __always_inline void count(u32 idx)
{
	u64 *c = counters.lookup(&idx);

	if (c)
		*c += 1; /* per-CPU slot: no atomic needed */
}

/* Parsed options live in a per-CPU scratch slot, not on the stack: the
 * verifier tracks stack values exactly, so option flags set from constants
 * while scanning would be known per path, every later `if` on them decided,
 * and the decisions would make the scan's states distinct (no pruning; the
 * 1M-instruction limit). Map memory is never tracked: reads are unknown. */
BPF_PERCPU_ARRAY(scratch, struct sg_tcpopts, 1);

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
#define SG_HANDOFF_WINDOW_NS (10 * 1000 * 1000)
BPF_TABLE("lru_hash", struct sg_flow, u64, handoffs, 65536);

/* The flow's 4-tuple without the ISN, for `handoffs`. */
static __always_inline void tuple_key(const struct sg_flow *f, struct sg_flow *k)
{
	*k = *f;
	k->w[f->ipv6 ? 4 : 1] &= 0xffffffff; /* keep the ports, drop seq */
}

static __always_inline int handed_off_recently(struct sg_flow *k, u64 now)
{
	u64 *last = handoffs.lookup(k);

	return last && now - *last < SG_HANDOFF_WINDOW_NS;
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
static __always_inline int leave_to_kernel(int state)
{
	count(state < 0 ? SG_C_nolistener : SG_C_established);
	return XDP_PASS;
}

/* syncache_add + syncache_respond with syncookies_only: the SYN becomes
 * our SYN-ACK in place. Options are written in Linux's order (MSS,
 * SACK-permitted + timestamps, window scale) so the frame looks like a
 * Linux SYN-ACK to middleboxes. */
static __always_inline int handle_syn(struct xdp_md *ctx, struct sg_pkt *p,
				      const struct sg_config *cfg,
				      const struct sg_secrets *sec)
{
	struct sg_tcpopts *o;
	struct sg_flow f = {};
	u32 our_mss, mss_out, mss_idx, ws_idx, ws_on, sack, ts, meta, slot;
	u32 l3_off = p->l3_off, isn, iss, tsval = 0, optlen, ip_len, tcp_len;
	u32 ports, new_len, zero = 0, offered;
	u8 ipv6 = p->ipv6;
	u64 h, sum, addr_sum;
	void *data, *data_end;
	struct tcphdr *tcp;
	u32 *op;
	int state;

	state = lookup_state(ctx, p);
	if (state != SG_TCP_LISTEN)
		return leave_to_kernel(state);

	o = scratch.lookup(&zero);
	if (!o)
		return XDP_PASS;
	o->mss = ipv6 ? SG_MSS_DEFAULT6 : SG_MSS_DEFAULT4; /* no MSS option */
	parse_tcp_options(ctx, p->l4_off, p->tcp->doff * 4, o);
	isn = bpf_ntohl(p->tcp->seq);
	ports = *(u32 *)p->tcp;
	flow_from_pkt(p, isn, &f);

	/* What we answer with: the peer's offer, masked by what the kernel's
	 * sysctls let the hand-off accept (same bits), without branches. */
	offered = o->flags & cfg->flags;
	ws_on = (offered & SG_HAS_WSCALE) >> 1;
	sack = (offered & SG_HAS_SACK) >> 2;
	ts = (offered & SG_HAS_TS) >> 3;
	ws_idx = sg_wscale_index(ws_on, o->wscale);

	our_mss = ipv6 ? cfg->mss6 : cfg->mss4;
	mss_out = o->mss < our_mss ? o->mss : our_mss;
	mss_idx = sg_mss_index(mss_out, ipv6);
	if (mss_out < sg_mss_value(0, ipv6))
		mss_out = sg_mss_value(0, ipv6);

	slot = sec->active & 1;
	meta = mss_idx << 5 | ws_idx << 2 | sack << 1 | slot;
	h = sg_cookie_hash(&sec->keys[slot], &f, meta);
	iss = sg_cookie_iss(h, meta);
	if (ts) /* ~1 ms clock with a keyed per-connection offset */
		tsval = (u32)(h >> 32) + (u32)(bpf_ktime_get_ns() >> 20);

	/* MSS, then SACK-permitted + timestamps (12) or NOP NOP SACK-permitted
	 * (4), then NOP window-scale (4). */
	optlen = 4 + 12 * ts + 4 * (sack & (ts ^ 1)) + 4 * ws_on;
	tcp_len = sizeof(struct tcphdr) + optlen;
	ip_len = ipv6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	new_len = l3_off + ip_len + tcp_len;
	/* IP options, a payload or padding in the SYN are not echoed. */
	if (new_len != p->frame_len &&
	    bpf_xdp_adjust_tail(ctx, (int)new_len - (int)p->frame_len)) {
		count(SG_C_unsupported);
		return XDP_PASS;
	}

	/* adjust_tail invalidated every packet pointer: start again. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (l3_off > 22) /* 14 + two VLAN tags; bounds the offset for the verifier */
		return XDP_ABORTED;

	{
		struct ethhdr *eth = data;
		u8 mac[ETH_ALEN];

		if ((void *)(eth + 1) > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	}

	if (ipv6) {
		struct ipv6hdr *ip6 = data + l3_off;
		u32 flow = (h >> 24) & 0xfffff;

		tcp = (void *)(ip6 + 1);
		if ((void *)(tcp + 1) > data_end)
			return XDP_ABORTED;
		*(__be32 *)ip6 = bpf_htonl(0x60000000 | flow);
		ip6->payload_len = bpf_htons(tcp_len);
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = cfg->ttl;
		__builtin_memcpy(&ip6->saddr, &f.w[2], 16);
		__builtin_memcpy(&ip6->daddr, &f.w[0], 16);
		addr_sum = (f.w[0] & 0xffffffff) + (f.w[0] >> 32) +
			   (f.w[1] & 0xffffffff) + (f.w[1] >> 32) +
			   (f.w[2] & 0xffffffff) + (f.w[2] >> 32) +
			   (f.w[3] & 0xffffffff) + (f.w[3] >> 32);
	} else {
		struct iphdr *ip = data + l3_off;
		u8 ttl = cfg->ttl;

		tcp = (void *)(ip + 1);
		if ((void *)(tcp + 1) > data_end)
			return XDP_ABORTED;
		*(u16 *)ip = bpf_htons(0x4500); /* version 4, ihl 5, tos 0 */
		ip->tot_len = bpf_htons(ip_len + tcp_len);
		ip->id = 0;
		ip->frag_off = bpf_htons(SG_IP_DF);
		ip->ttl = ttl;
		ip->protocol = IPPROTO_TCP;
		ip->saddr = f.w[0] >> 32;
		ip->daddr = (u32)f.w[0];
		addr_sum = (f.w[0] & 0xffffffff) + (f.w[0] >> 32);
		ip->check = sg_csum_fold(bpf_htons(0x4500) +
				      bpf_htons(ip_len + tcp_len) +
				      bpf_htons(SG_IP_DF) +
				      bpf_htons((u16)ttl << 8 | IPPROTO_TCP) +
				      addr_sum);
	}

	/* TCP header: ports swapped, ack = the client's ISN + 1. */
	*(u32 *)tcp = ports >> 16 | ports << 16;
	tcp->seq = bpf_htonl(iss);
	tcp->ack_seq = bpf_htonl(isn + 1);
	*((u16 *)tcp + 6) = bpf_htons((tcp_len / 4) << 12 | SG_TH_SYN | SG_TH_ACK);
	tcp->window = bpf_htons(cfg->window);
	tcp->urg_ptr = 0;
	sum = sg_csum_pseudo(addr_sum, tcp_len) + ports + tcp->seq +
	      tcp->ack_seq + *((u16 *)tcp + 6) + tcp->window;

	/* Options, one 32-bit word at a time, each checked against the end. */
	op = (void *)(tcp + 1);
	if ((void *)(op + 1) > data_end)
		return XDP_ABORTED;
	op[0] = bpf_htonl(SG_OPT_MSS << 24 | 4 << 16 | mss_out);
	sum += op[0];
	if (ts) {
		if ((void *)(op + 4) > data_end)
			return XDP_ABORTED;
		op[1] = bpf_htonl(sack ? 0x0402080a : 0x0101080a);
		op[2] = bpf_htonl(tsval);
		op[3] = o->tsval; /* TSecr echoes the client's TSval */
		sum += (u64)op[1] + op[2] + op[3];
		op += 4;
	} else if (sack) {
		if ((void *)(op + 2) > data_end)
			return XDP_ABORTED;
		op[1] = bpf_htonl(0x01010402);
		sum += op[1];
		op += 2;
	} else {
		op += 1;
	}
	if (ws_on) {
		if ((void *)(op + 1) > data_end)
			return XDP_ABORTED;
		*op = bpf_htonl(0x01030300 | cfg->wscale);
		sum += *op;
	}
	tcp->check = sg_csum_fold(sum);

	count(SG_C_sendcookie);
	return XDP_TX;
}

/* syncache_expand / syncookie_lookup: an ACK for a 4-tuple the kernel does
 * not know must carry our cookie. */
static __always_inline int handle_ack(struct xdp_md *ctx, struct sg_pkt *p,
				      const struct sg_config *cfg,
				      const struct sg_secrets *sec)
{
	struct sg_tcpopts *o;
	struct sg_flow f = {}, key;
	struct sg_handoff *meta_area;
	u32 cookie, isn, zero = 0;
	u8 meta, ws_idx, ipv6 = p->ipv6;
	u64 h, now;
	int state;

	state = lookup_state(ctx, p);
	if (state != SG_TCP_LISTEN)
		return leave_to_kernel(state);

	cookie = bpf_ntohl(p->tcp->ack_seq) - 1;
	isn = bpf_ntohl(p->tcp->seq) - 1;
	meta = cookie & 0xff;
	flow_from_pkt(p, isn, &f);
	/* The slot bit picks the key: the current one or the previous one.
	 * A key older than that has been overwritten, so its cookies fail. */
	h = sg_cookie_hash(&sec->keys[SG_META_SLOT(meta)], &f, meta);
	tuple_key(&f, &key);
	now = bpf_ktime_get_ns();
	if (cookie >> 8 != (u32)(h & 0xffffff)) {
		/* Only segments with data or FIN can trail a hand-off; a bogus
		 * pure ACK costs no map lookup. */
		if ((p->l4_len > p->tcp->doff * 4 || p->tcp->fin) &&
		    handed_off_recently(&key, now)) {
			count(SG_C_coalesced);
			return XDP_PASS;
		}
		count(SG_C_badcookie);
		return XDP_DROP;
	}
	if (handed_off_recently(&key, now)) {
		count(SG_C_coalesced);
		return XDP_PASS;
	}
	handoffs.update(&key, &now);

	/* Timestamps were negotiated iff the ACK carries them (we echo the
	 * option whenever the client offers it and the sysctl allows). */
	o = scratch.lookup(&zero);
	if (!o)
		return XDP_PASS;
	parse_tcp_options(ctx, p->l4_off, p->tcp->doff * 4, o);
	ws_idx = SG_META_WS(meta);

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct sg_handoff))) {
		count(SG_C_unsupported); /* the driver has no metadata area */
		return XDP_PASS;
	}
	meta_area = (void *)(long)ctx->data_meta;
	if ((void *)(meta_area + 1) > (void *)(long)ctx->data)
		return XDP_ABORTED;
	__builtin_memset(meta_area, 0, sizeof(*meta_area));
	meta_area->magic = SG_HANDOFF_MAGIC;
	meta_area->attrs.mss = sg_mss_value(SG_META_MSS(meta), ipv6);
	meta_area->attrs.sack_ok = SG_META_SACK(meta);
	if (ws_idx) {
		meta_area->attrs.wscale_ok = 1;
		meta_area->attrs.snd_wscale = sg_wscale_value(ws_idx);
		meta_area->attrs.rcv_wscale = cfg->wscale;
	}
	if (o->flags & cfg->flags & SG_HAS_TS) {
		meta_area->attrs.tstamp_ok = 1;
		meta_area->attrs.rcv_tsval = bpf_ntohl(o->tsval);
		meta_area->attrs.rcv_tsecr = bpf_ntohl(o->tsecr);
	}
	count(SG_C_recvcookie);
	return XDP_PASS;
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

	count(SG_C_packets);
	r = parse_pkt(data, data_end, &p);
	if (r == SG_PARSE_MALFORMED) {
		count(SG_C_malformed);
		return XDP_PASS;
	}
	if (r != SG_PARSE_TCP)
		goto pass;

	port = bpf_ntohs(p.tcp->dest);
	protected = listeners.lookup(&port);
	cfg = config.lookup(&zero);
	sec = secrets.lookup(&zero);
	if (!protected || !*protected || !cfg || !sec)
		goto pass;

	flags = ((u8 *)p.tcp)[13];
	if ((flags & (SG_TH_SYN | SG_TH_ACK | SG_TH_RST | SG_TH_FIN)) == SG_TH_SYN)
		return handle_syn(ctx, &p, cfg, sec);
	if ((flags & (SG_TH_SYN | SG_TH_ACK | SG_TH_RST)) == SG_TH_ACK)
		return handle_ack(ctx, &p, cfg, sec);
pass:
	count(SG_C_passed);
	return XDP_PASS;
}
