/* SPDX-License-Identifier: GPL-2.0-only */
/* Packet parsing: Ethernet with up to two VLAN tags, IPv4 or IPv6, TCP and
 * its options. Every access is checked against data_end. Shared by the XDP
 * program and the tc program (both see the frame from the Ethernet header).
 */
#ifndef SG_PARSE_H
#define SG_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/in.h>
#include "proto.h"

/* Copies from an XDP frame to memory: bpf_xdp_load_bytes (Linux 5.18). For
 * older kernels the loader defines SG_COMPAT_LOAD_BYTES (controller/
 * datapath.py, from the kernel's BTF) and the copy is made from packet
 * pointers a byte at a time, each byte behind its own bounds check; max is
 * a constant bound on len (the size of the memory side), off is bounded
 * for the verifier. */
#ifdef SG_COMPAT_LOAD_BYTES
#define SG_COMPAT_MAX_OFF 4095

static __always_inline int sg_copy_bytes(struct xdp_md *ctx, u32 off, u8 *mem,
					 u32 len, const u32 max)
{
	u8 *pkt = (u8 *)(long)ctx->data + (off & SG_COMPAT_MAX_OFF);
	void *end = (void *)(long)ctx->data_end;

	if (off > SG_COMPAT_MAX_OFF || len > max)
		return -1;
	/* A bounded loop (Linux 5.3), not unrolled: up to 104 bytes a call.
	 * The barrier keeps i a plain counter: clang would otherwise count
	 * min(len, max) down in a register of its own and step the pointers,
	 * which 5.10's verifier cannot bound ("invalid access to map value,
	 * value_size=160 off=160"); on i it decides `i < max` each round. */
#pragma clang loop unroll(disable) vectorize(disable)
	for (u32 i = 0; i < max; i++) {
		asm volatile("" : "+r"(i));
		if (i >= len)
			break;
		if ((void *)(pkt + i + 1) > end)
			return -1;
		mem[i] = pkt[i];
	}
	return 0;
}
#define sg_load_bytes(ctx, off, mem, len, max) \
	sg_copy_bytes(ctx, off, (u8 *)(mem), len, max)
#else
#define sg_load_bytes(ctx, off, mem, len, max) \
	bpf_xdp_load_bytes(ctx, off, mem, len)
#endif

enum sg_parse {
	SG_PARSE_TCP, /* IPv4/IPv6 + TCP, headers all inside the frame */
	SG_PARSE_OTHER, /* not ours to judge (not IP, not TCP, fragment, IPv6 ext headers) */
	SG_PARSE_MALFORMED, /* IP or TCP header lengths that do not fit the frame */
	SG_PARSE_ICMP, /* ICMP or ICMPv6 (l4_off set): maybe about our SYN-ACK */
};

struct sg_pkt {
	u32 l3_off;    /* offset of the IP header (after 0..2 VLAN tags) */
	u32 l4_off;    /* offset of the TCP header */
	u32 l4_len;    /* TCP header + payload, from the IP length fields */
	u32 frame_len; /* data_end - data */
	u8 ipv6;
	struct iphdr *ip4;
	struct ipv6hdr *ip6;
	struct tcphdr *tcp;
};

/* Ethernet and up to two VLAN tags (802.1Q / 802.1ad, QinQ). 0 or -1. */
static __always_inline int parse_l2(void *data, void *data_end, u16 *proto,
				    u32 *l3_off)
{
	struct ethhdr *eth = data;
	struct vlan_hdr {
		__be16 tci;
		__be16 proto;
	} *vh;
	u32 off = sizeof(*eth);

	if ((void *)(eth + 1) > data_end)
		return -1;
	*proto = bpf_ntohs(eth->h_proto);

#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (*proto != SG_ETH_P_8021Q && *proto != SG_ETH_P_8021AD)
			break;
		vh = data + off;
		if ((void *)(vh + 1) > data_end)
			return -1;
		*proto = bpf_ntohs(vh->proto);
		off += sizeof(*vh);
	}
	*l3_off = off;
	return 0;
}

static __always_inline int parse_pkt(void *data, void *data_end,
				     struct sg_pkt *p)
{
	u16 proto;
	u32 l3_off, ihl, doff;
	struct tcphdr *tcp;

	p->frame_len = data_end - data;
	if (parse_l2(data, data_end, &proto, &l3_off))
		return SG_PARSE_MALFORMED;
	p->l3_off = l3_off;

	if (proto == ETH_P_IP) {
		struct iphdr *ip = data + l3_off;
		u32 tot;

		if ((void *)(ip + 1) > data_end)
			return SG_PARSE_MALFORMED;
		ihl = ip->ihl * 4;
		tot = bpf_ntohs(ip->tot_len);
		if (ip->version != 4 || ihl < sizeof(*ip) || tot < ihl ||
		    l3_off + tot > p->frame_len)
			return SG_PARSE_MALFORMED;
		/* Fragments are reassembled by the kernel, not judged here. */
		if (ip->frag_off & bpf_htons(SG_IP_MF | SG_IP_OFFMASK))
			return SG_PARSE_OTHER;
		p->ipv6 = 0;
		p->ip4 = ip;
		p->l4_off = l3_off + ihl;
		p->l4_len = tot - ihl;
		if (ip->protocol == IPPROTO_ICMP)
			return SG_PARSE_ICMP;
		if (ip->protocol != IPPROTO_TCP)
			return SG_PARSE_OTHER;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = data + l3_off;
		u32 plen;

		if ((void *)(ip6 + 1) > data_end)
			return SG_PARSE_MALFORMED;
		plen = bpf_ntohs(ip6->payload_len);
		if (ip6->version != 6 ||
		    l3_off + sizeof(*ip6) + plen > p->frame_len)
			return SG_PARSE_MALFORMED;
		p->ipv6 = 1;
		p->ip6 = ip6;
		p->l4_off = l3_off + sizeof(*ip6);
		p->l4_len = plen;
		if (ip6->nexthdr == SG_IPPROTO_ICMPV6)
			return SG_PARSE_ICMP;
		/* Extension headers (and jumbograms, plen 0) go to the kernel. */
		if (ip6->nexthdr != IPPROTO_TCP)
			return SG_PARSE_OTHER;
	} else {
		return SG_PARSE_OTHER;
	}

	/* The verifier needs the offset bounded before it is added to data. */
	if (p->l4_off > 128)
		return SG_PARSE_MALFORMED;
	tcp = data + p->l4_off;
	if ((void *)(tcp + 1) > data_end || p->l4_len < sizeof(*tcp))
		return SG_PARSE_MALFORMED;
	doff = tcp->doff * 4;
	if (doff < sizeof(*tcp) || doff > p->l4_len)
		return SG_PARSE_MALFORMED;
	p->tcp = tcp;
	return SG_PARSE_TCP;
}

/* An ICMP "destination unreachable" (RFC 792 type 3 except code 4, which
 * is path MTU discovery; ICMPv6 type 1) quoting a TCP segment we sent, as
 * the seed's syncache_unreach sees it: the quoted segment's 4-tuple turned
 * round (client first, the syncache's key) and its seq. 0 if it is one.
 * Read with sg_load_bytes: with packet pointers clang merges the v4 and v6
 * branches' pointers and the verifier loses their bounds checks. */
static __always_inline int parse_icmp_unreach(struct xdp_md *ctx,
					      struct sg_pkt *p,
					      struct sg_flow *key, u32 *seq,
					      u16 *server_port)
{
	u32 off = p->l4_off + 8; /* type, code, checksum, unused */
	u8 icmp[2];
	struct {
		__be16 source;
		__be16 dest;
		__be32 seq;
	} q;

	if (sg_load_bytes(ctx, p->l4_off, icmp, sizeof(icmp), sizeof(icmp)))
		return -1;
	if (p->ipv6) {
		struct ipv6hdr in;

		if (icmp[0] != 1 /* ICMPV6_DEST_UNREACH */ ||
		    sg_load_bytes(ctx, off, &in, sizeof(in), sizeof(in)) ||
		    in.nexthdr != IPPROTO_TCP ||
		    sg_load_bytes(ctx, off + sizeof(in), &q, sizeof(q),
				  sizeof(q)))
			return -1;
		__builtin_memcpy(&key->w[0], &in.daddr, 16);
		__builtin_memcpy(&key->w[2], &in.saddr, 16);
		key->w[4] = (u64)q.dest | (u64)q.source << 16;
		key->ipv6 = 1;
	} else {
		struct iphdr in;

		if (icmp[0] != 3 /* ICMP_DEST_UNREACH */ || icmp[1] == 4 ||
		    sg_load_bytes(ctx, off, &in, sizeof(in), sizeof(in)) ||
		    in.protocol != IPPROTO_TCP || in.ihl < 5 ||
		    sg_load_bytes(ctx, off + in.ihl * 4, &q, sizeof(q),
				  sizeof(q)))
			return -1;
		key->w[0] = (u64)in.daddr | (u64)in.saddr << 32;
		key->w[1] = (u64)q.dest | (u64)q.source << 16;
		key->ipv6 = 0;
	}
	*seq = bpf_ntohl(q.seq);
	*server_port = bpf_ntohs(q.source);
	return 0;
}

/* Options found (sg_tcpopts.flags). WSCALE, SACK and TS have the bits of
 * the SG_CF_* switches in maps.h, so "offered & allowed" is one AND; SIG
 * has no switch, so the AND drops it. */
#define SG_HAS_WSCALE 0x02
#define SG_HAS_SACK   0x04
#define SG_HAS_TS     0x08
/* TCP-MD5 or TCP-AO: the segment is signed (sizes as Linux's
 * tcp_parse_auth_options takes them) */
#define SG_HAS_SIG 0x40

struct sg_tcpopts {
	u16 mss;
	u8 wscale;
	u8 flags;     /* SG_HAS_* */
	__be32 tsval; /* as on the wire */
	__be32 tsecr;
};

/* One step of the option scan: position i (a constant) is looked at only
 * when an option starts there. */
#define SG_OPT_AT(i)                                                    \
	do {                                                            \
		u8 kind, size;                                          \
		if ((i) >= len)                                         \
			goto done;                                      \
		if ((i) != next)                                        \
			break;                                          \
		kind = buf[(i)];                                        \
		if (kind == SG_OPT_EOL)                                 \
			goto done;                                      \
		if (kind == SG_OPT_NOP) {                               \
			next = (i) + 1;                                 \
			break;                                          \
		}                                                       \
		size = buf[(i) + 1];                                    \
		if (size < 2 || (i) + size > len)                       \
			goto done;                                      \
		if (kind == SG_OPT_MSS && size == 4) {                  \
			o->mss = (u16)buf[(i) + 2] << 8 | buf[(i) + 3]; \
		} else if (kind == SG_OPT_WSCALE && size == 3) {        \
			o->wscale = buf[(i) + 2] > SG_MAX_WSCALE        \
					    ? SG_MAX_WSCALE             \
					    : buf[(i) + 2];             \
			o->flags |= SG_HAS_WSCALE;                      \
		} else if (kind == SG_OPT_SACKPERM && size == 2) {      \
			o->flags |= SG_HAS_SACK;                        \
		} else if (kind == SG_OPT_TS && size == 10) {           \
			__builtin_memcpy(&o->tsval, &buf[(i) + 2], 4);  \
			__builtin_memcpy(&o->tsecr, &buf[(i) + 6], 4);  \
			o->flags |= SG_HAS_TS;                          \
		} else if ((kind == SG_OPT_MD5SIG && size == 18) ||     \
			   (kind == SG_OPT_AO && size >= 4)) {          \
			o->flags |= SG_HAS_SIG;                         \
		}                                                       \
		next = ((i) + size) & 63; /* see below */               \
	} while (0)
/* clang-format off */
#define SG_OPT_AT4(i)                                                          \
	SG_OPT_AT(i); SG_OPT_AT((i) + 1); SG_OPT_AT((i) + 2); SG_OPT_AT((i) + 3)
/* clang-format on */

/* Parse the options of the TCP header at `off` (doff bytes long) in an XDP
 * frame the way Linux's tcp_parse_options does: stop at EOL, at a length
 * below 2 or past the end; ignore options with a wrong length.
 *
 * Verifier: the options are copied to the stack with one helper call and
 * scanned at the 40 constant offsets, written out by macro (clang turns a
 * `for` loop with `continue` back into a loop over a variable offset). A
 * loop that walks a variable offset lets the verifier decide its bounds
 * checks from the offset's range, which makes the offset precise, stops
 * state pruning, and the option sequences then exceed the 1M-instruction
 * limit. `next & 63` changes nothing at run time (next <= len <= 40 there)
 * but widens the verifier's range for it to [0, 40], so it can never decide
 * `i != next` from the range alone and keeps `next` imprecise: the states
 * at each position then prune. buf has room past 40 so every constant index
 * is in bounds; bytes past len are zero and never used. */
static __always_inline void parse_tcp_options(struct xdp_md *ctx, u32 off,
					      u32 doff, struct sg_tcpopts *o)
{
	u8 buf[56] = {};
	/* & 63: doff >= 20 was checked, but the verifier needs the bound here.
	 * u64: a u32 is compared as a zero-extended copy, whose bounds never
	 * reach the register passed to the helper (Linux 6.1's verifier). */
	u64 len = (doff - sizeof(struct tcphdr)) & 63;
	u32 next = 0;

	o->flags = 0;
	/* len is a multiple of 4. `< 4`, not `== 0`: only an ordered compare
	 * raises the lower bound on 6.1's verifier ("invalid zero-sized read"
	 * otherwise). Two compares, kept apart: clang folds them into one
	 * unsigned compare of len - 41, which bounds neither. The first barrier
	 * hides that len is a multiple of 4, from which clang would make `< 4`
	 * an `== 0` again. */
	asm volatile("" : "+r"(len));
	if (len < 4)
		return;
	asm volatile("" : "+r"(len));
	if (len > 40 ||
	    sg_load_bytes(ctx, off + sizeof(struct tcphdr), buf, len, 40))
		return;
	/* clang-format off */
	SG_OPT_AT4(0); SG_OPT_AT4(4); SG_OPT_AT4(8); SG_OPT_AT4(12);
	SG_OPT_AT4(16); SG_OPT_AT4(20); SG_OPT_AT4(24); SG_OPT_AT4(28);
	SG_OPT_AT4(32); SG_OPT_AT4(36);
	/* clang-format on */
done:
	return;
}

#endif /* SG_PARSE_H */
