/* SPDX-License-Identifier: GPL-2.0-only */
/* Our SYN-ACK, written in place over the client's SYN (the seed's
 * syncache_respond). Map-free: the caller decides what it says.
 *
 * Options in Linux's order, so it looks like a Linux SYN-ACK to middleboxes:
 *
 *   MSS (4) | SACK-permitted + timestamps (12)  | NOP + window scale (4)
 *           | or NOP NOP + SACK-permitted (4)   |
 *           | or nothing                        |
 */
#ifndef SG_SYNACK_H
#define SG_SYNACK_H

#include "reply.h"

/* What our SYN-ACK says, fresh from a SYN or again from an entry. */
struct sg_synack {
	u32 iss, ack;
	u32 tsval, tsecr; /* host order; used when ts */
	u32 flowlabel;
	u16 mss, window;
	u8 ws_on, wscale, sack, ts, ecn, ttl;
};

/* Our SYN-ACK's length from l3_off: MSS, then SACK-permitted + timestamps
 * (12) or NOP NOP SACK-permitted (4), then NOP window-scale (4). */
static __always_inline u32 synack_len(u32 l3_off, u64 ipv6,
				      const struct sg_synack *sa)
{
	u32 optlen =
		4 + 12 * sa->ts + 4 * (sa->sack & (sa->ts ^ 1)) + 4 * sa->ws_on;
	u32 ip_len = ipv6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);

	return l3_off + ip_len + sizeof(struct tcphdr) + optlen;
}

/* Rewrite the frame in place into our SYN-ACK; f holds the SYN's addresses
 * and ports. 0: ready for XDP_TX; -1: the driver cannot resize the frame
 * (untouched); -2: the verifier's bounds (cannot happen; frame changed). */
static __always_inline int write_synack(struct xdp_md *ctx, u32 l3_off,
					u32 frame_len, const struct sg_flow *f,
					const struct sg_synack *sa)
{
	u32 ip_len = f->ipv6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	u32 tcp_len = synack_len(l3_off, f->ipv6, sa) - l3_off - ip_len;
	struct sg_reply r;
	void *data_end;
	struct tcphdr *tcp;
	u64 sum;
	u32 *op;
	int err = write_reply(ctx, l3_off, frame_len, f, sa->ttl, sa->flowlabel,
			      tcp_len, &r);

	if (err)
		return err;
	tcp = r.tcp;
	data_end = r.data_end;
	tcp->seq = bpf_htonl(sa->iss);
	tcp->ack_seq = bpf_htonl(sa->ack);
	/* ECE without CWR: the ECN-setup SYN-ACK of RFC 3168 6.1.1. */
	*((u16 *)tcp + 6) = bpf_htons((tcp_len / 4) << 12 | SG_TH_SYN |
				      SG_TH_ACK | (sa->ecn ? SG_TH_ECE : 0));
	tcp->window = bpf_htons(sa->window);
	tcp->urg_ptr = 0;
	sum = r.sum + tcp->seq + tcp->ack_seq + *((u16 *)tcp + 6) + tcp->window;

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

#endif /* SG_SYNACK_H */
