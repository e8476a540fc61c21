/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The benchmarks' flood generator, compiled by bcc (bench/livegen.py).
 *
 * gen: run with BPF_PROG_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES)
 * in the attacker's namespace, ingress_ifindex the attacker's veth; it
 * returns XDP_TX, so each frame leaves that veth and reaches the server's
 * XDP as an xdp_frame, as from a NIC. The kernel recycles the frames between
 * runs, with whatever was written into them last (by this program or, for a
 * frame that came back, by the other side): so every run copies the whole
 * template in and writes the varying fields, a random source in
 * SPOOF_BASE/16 (SPOOF_V6: 2001:db8:5::/64), source port and sequence
 * number, and both checksums, updated from the template's (computed with
 * those fields zero).
 *
 * sink: on the attacker's veth, counts what comes back (the SYN-ACKs) by
 * TCP flags and drops it.
 */

#include <linux/if_ether.h>
#include <uapi/linux/bpf.h>

#include "spoof.h"

struct gen_cfg {
	u8 frame[FRAME_LEN];
	u32 saddr_hi; /* IPv4: the spoofed /16, network order */
};

BPF_ARRAY(gen_cfg, struct gen_cfg, 1);
/* 0: SYN-ACKs, 1: RSTs, 2: anything else */
BPF_PERCPU_ARRAY(sink_count, u64, 3);

int gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	u32 k = 0;
	struct gen_cfg *c = gen_cfg.lookup(&k);
	u32 r1 = bpf_get_prandom_u32(), r2 = bpf_get_prandom_u32();
	u16 *ip, *tcp;
	u32 s;

	if (!c || data + FRAME_LEN > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, c->frame, FRAME_LEN);
	ip = data + ETH_HLEN;
#ifdef SPOOF_V6
	tcp = data + ETH_HLEN + 40;
	/* source 2001:db8:5::/64, the interface id random */
	ip[8 / 2 + 4] = r1;
	ip[8 / 2 + 5] = r1 >> 16;
	ip[8 / 2 + 6] = r2;
	ip[8 / 2 + 7] = r2 >> 16;
	s = (u16)r1 + (r1 >> 16) + (u16)r2 + (r2 >> 16);
#else
	tcp = data + ETH_HLEN + 20;
	s = spoof_saddr4(ip, r1); /* in SPOOF_BASE/16 */
#endif
	spoof_ports(tcp, bpf_get_prandom_u32(), r2, s);
	return XDP_TX;
}

int sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	u32 k = 2, off;
	u8 *flags;
	u64 *n;

	if (data + ETH_HLEN > end)
		goto out;
	if (eth->h_proto == __builtin_bswap16(ETH_P_IP))
		off = ETH_HLEN + 20 + 13;
	else if (eth->h_proto == __builtin_bswap16(ETH_P_IPV6))
		off = ETH_HLEN + 40 + 13;
	else
		goto out;
	flags = data + off;
	if ((void *)(flags + 1) > end)
		goto out;
	if ((*flags & 0x12) == 0x12)
		k = 0;
	else if (*flags & 0x04)
		k = 1;
out:
	n = sink_count.lookup(&k);
	if (n)
		*n += 1;
	return XDP_DROP;
}
