/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The bounce generator of the flood benchmark, compiled by bcc
 * (bench/bouncegen.py). It needs no BPF_PROG_RUN (live frames are refused
 * on some hosts): frames bounce between two XDP programs.
 *
 * bounce: native XDP on the attacker's veth. Every frame that comes back
 * from the server (a SYN-ACK, an RST, whatever the defence sends) is
 * counted by its TCP flags and, while this CPU's budget lasts and the
 * deadline has not passed, rewritten into the next spoofed SYN: the
 * template copied in (the frame's length set to it with adjust_tail), a
 * random source in 198.19.0.0/16, random source port and ISN, both
 * checksums updated from the template's (made with those fields zero), and
 * XDP_TX. The frame then crosses the veth as an xdp_frame into the server
 * veth's ring and its NAPI poll, as a NIC's frames reach XDP. A spent budget
 * or a passed deadline drops the frame: the flood stops by itself.
 * The budget is per CPU (a per-CPU array the driver fills): veth's XDP_TX
 * picks the peer's queue by CPU, so each CPU's chain of frames stays on it.
 *
 * reflect: the baseline on the server's veth, XDP_TX of every frame as it
 * is (the attacker rewrites it anyway). reflect_tc: the same through the
 * kernel's skb path: on the server's tc ingress (behind an XDP_PASS
 * program), each skb is redirected out of the veth it came in on, so it
 * reaches the attacker as an skb, as the kernel's own answers do.
 */

#include <linux/if_ether.h>
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "spoof.h"

/* The template's TCP header offset: IPv4 without options unless the loader
 * says otherwise (an IPv6 template, SPOOF_V6, with its extension headers). */
#ifndef L4_OFF
#define L4_OFF (ETH_HLEN + 20)
#endif

struct bounce_cfg {
	u8 frame[FRAME_LEN];
	u64 deadline_ns; /* bpf_ktime_get_ns() after which every frame drops */
};

BPF_ARRAY(bounce_cfg, struct bounce_cfg, 1);
/* frames this CPU may still turn into SYNs */
BPF_PERCPU_ARRAY(budget, u64, 1);
/* 0: SYN-ACKs, 1: RSTs, 2: anything else came back; 3: SYNs sent (XDP_TX);
 * 4: dropped (budget spent or deadline); 5: dropped (frame too short) */
BPF_PERCPU_ARRAY(bounce_count, u64, 6);
/* bpf_ktime_get_ns() of this CPU's last SYN */
BPF_PERCPU_ARRAY(last_tx, u64, 1);

static __always_inline void count(u32 k)
{
	u64 *n = bounce_count.lookup(&k);

	if (n)
		*n += 1;
}

int bounce(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	u32 k = 0, kind = 2;
	struct bounce_cfg *c;
	u64 *left, *last, now;
	u32 s;
	u16 *ip, *tcp;
	u8 *flags;
	int len;

	/* The defences' answers carry no IP options or extension headers;
	 * an IPv6 frame with any (the reflector's) is "anything else". */
	flags = NULL;
	if (data + ETH_HLEN + 20 + 14 <= end &&
	    eth->h_proto == __builtin_bswap16(ETH_P_IP))
		flags = data + ETH_HLEN + 20 + 13;
	else if (data + ETH_HLEN + 40 + 14 <= end &&
		 eth->h_proto == __builtin_bswap16(ETH_P_IPV6) &&
		 *(u8 *)(data + ETH_HLEN + 6) == 6 /* TCP */)
		flags = data + ETH_HLEN + 40 + 13;
	if (flags && (*flags & 0x12) == 0x12)
		kind = 0;
	else if (flags && (*flags & 0x04))
		kind = 1;
	count(kind);
	c = bounce_cfg.lookup(&k);
	left = budget.lookup(&k);
	last = last_tx.lookup(&k);
	now = bpf_ktime_get_ns();
	if (!c || !left || !last || *left == 0 || now > c->deadline_ns) {
		count(4);
		return XDP_DROP;
	}
	len = end - data;
	if (len != FRAME_LEN && bpf_xdp_adjust_tail(ctx, FRAME_LEN - len)) {
		count(5);
		return XDP_DROP;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + FRAME_LEN > end) {
		count(5);
		return XDP_DROP;
	}
	*left -= 1;
	*last = now;
	__builtin_memcpy(data, c->frame, FRAME_LEN);
	ip = data + ETH_HLEN;
	tcp = data + L4_OFF;
#ifdef SPOOF_V6
	s = spoof_saddr6(ip, bpf_get_prandom_u32()); /* in 2001:db8:19::/112 */
#else
	s = spoof_saddr4(ip, bpf_get_prandom_u32()); /* in 198.19.0.0/16 */
#endif
	spoof_ports(tcp, bpf_get_prandom_u32(), bpf_get_prandom_u32(), s);
	count(3);
	return XDP_TX;
}

int reflect(struct xdp_md *ctx)
{
	return XDP_TX;
}

int reflect_tc(struct __sk_buff *skb)
{
	return bpf_redirect(skb->ifindex, 0);
}
