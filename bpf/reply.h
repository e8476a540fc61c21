/* SPDX-License-Identifier: GPL-2.0-only */
/* A reply written in place over the segment it answers: the frame resized,
 * the MACs, addresses and ports turned round, a fresh IP header (no IP
 * options, DF set). Map-free; synack.h and reset.h write what follows.
 */
#ifndef SG_REPLY_H
#define SG_REPLY_H

#include "csum.h"
#include "maps.h"
#include "parse.h"

/* Swap the Ethernet addresses of an L2 header: a reply's. */
static __always_inline void swap_macs(u8 *eth)
{
	u8 mac[ETH_ALEN];

	__builtin_memcpy(mac, eth, ETH_ALEN);
	__builtin_memcpy(eth, eth + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(eth + ETH_ALEN, mac, ETH_ALEN);
}

/* The reply's headers: what the caller sums into the TCP checksum and
 * where the TCP header is. */
struct sg_reply {
	struct tcphdr *tcp;
	void *data_end;
	u64 sum; /* pseudo-header and ports, for the TCP checksum */
};

/* Resize the frame to l3_off + IP header + tcp_len and write the reply's
 * L2 and IP headers and ports for f (the segment's addresses and ports).
 * 0: r is ready for the TCP header; -1: the driver cannot resize the frame
 * (untouched); -2: the verifier's bounds (cannot happen; frame changed). */
static __always_inline int write_reply(struct xdp_md *ctx, u32 l3_off,
				       u32 frame_len, const struct sg_flow *f,
				       u8 ttl, u32 flowlabel, u32 tcp_len,
				       struct sg_reply *r)
{
	u32 ip_len = f->ipv6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	u32 new_len = l3_off + ip_len + tcp_len, ports;
	void *data, *data_end;
	u64 addr_sum;

	/* IP options, a payload or padding in the segment are not echoed. */
	if (new_len != frame_len &&
	    bpf_xdp_adjust_tail(ctx, (int)new_len - (int)frame_len))
		return -1;

	/* adjust_tail invalidated every packet pointer: start again. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* 14 + two VLAN tags. The mask bounds the offset for the verifier:
	 * 5.10's does not carry the compare's bound to the copy of l3_off
	 * that clang adds to data ("R3 offset is outside of the packet"),
	 * and the barrier keeps clang from dropping the mask after it. */
	if (l3_off > 22)
		return -2;
	asm volatile("" : "+r"(l3_off));
	l3_off &= 0x1f;
	if (data + sizeof(struct ethhdr) > data_end)
		return -2;
	swap_macs(data);

	if (f->ipv6) {
		struct ipv6hdr *ip6 = data + l3_off;

		r->tcp = (void *)(ip6 + 1);
		if ((void *)(r->tcp + 1) > data_end)
			return -2;
		*(__be32 *)ip6 = bpf_htonl(0x60000000 | flowlabel);
		ip6->payload_len = bpf_htons(tcp_len);
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = ttl;
		__builtin_memcpy(&ip6->saddr, &f->w[2], 16);
		__builtin_memcpy(&ip6->daddr, &f->w[0], 16);
		addr_sum = (f->w[0] & 0xffffffff) + (f->w[0] >> 32) +
			   (f->w[1] & 0xffffffff) + (f->w[1] >> 32) +
			   (f->w[2] & 0xffffffff) + (f->w[2] >> 32) +
			   (f->w[3] & 0xffffffff) + (f->w[3] >> 32);
		ports = (u32)f->w[4];
	} else {
		struct iphdr *ip = data + l3_off;

		r->tcp = (void *)(ip + 1);
		if ((void *)(r->tcp + 1) > data_end)
			return -2;
		*(u16 *)ip = bpf_htons(0x4500); /* version 4, ihl 5, tos 0 */
		ip->tot_len = bpf_htons(ip_len + tcp_len);
		ip->id = 0;
		ip->frag_off = bpf_htons(SG_IP_DF);
		ip->ttl = ttl;
		ip->protocol = IPPROTO_TCP;
		ip->saddr = f->w[0] >> 32;
		ip->daddr = (u32)f->w[0];
		addr_sum = (f->w[0] & 0xffffffff) + (f->w[0] >> 32);
		ip->check = sg_csum_fold(
			bpf_htons(0x4500) + bpf_htons(ip_len + tcp_len) +
			bpf_htons(SG_IP_DF) +
			bpf_htons((u16)ttl << 8 | IPPROTO_TCP) + addr_sum);
		ports = (u32)f->w[1];
	}
	/* TCP header: ports swapped. */
	*(u32 *)r->tcp = ports >> 16 | ports << 16;
	r->data_end = data_end;
	r->sum = sg_csum_pseudo(addr_sum, tcp_len) + ports;
	return 0;
}

#endif /* SG_REPLY_H */
