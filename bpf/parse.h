/* SPDX-License-Identifier: GPL-2.0-only */
/* Packet parsing: Ethernet with up to two VLAN tags, IPv4 or IPv6 (with
 * the extension headers Linux takes before TCP), TCP and its options.
 * Every access is checked against data_end. Shared by the XDP program and
 * the tc program (both see the frame from the Ethernet header).
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
	SG_PARSE_TCP,	/* IPv4/IPv6 + TCP, headers all inside the frame */
	SG_PARSE_OTHER, /* not ours to judge (not IP, not TCP, a later fragment,
			 * IPv6 extension headers Linux may refuse: parse_ext) */
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
	/* Apart from ipv6: stored with it, an unknown byte would hide from
	 * the verifier that ipv6 is 0 on the IPv4 path (it is read back). */
	u8 ext;	 /* IPv6 extension headers before the TCP header */
	u8 frag; /* a first fragment (MF set): more of the segment follows */
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

/* IPv6 extension headers: a chain of at most SG_EXT_MAX_HDRS before TCP.
 * Five is each header RFC 8200 4.1 orders before an upper layer once, AH
 * and ESP left out (the kernel's to check): hop-by-hop, destination
 * options, routing, fragment, destination options. A longer chain is
 * passed (the kernel's price): no client sends one, and each header more
 * costs its sender 8 bytes a SYN. SG_L4_MAX bounds where TCP may start:
 * the verifier needs packet offsets bounded, and kcookie.h masks l4_off
 * with 0xff. */
#define SG_EXT_MAX_HDRS 5
#define SG_EXT_MAX_TLVS 8 /* options looked at in one options header */
#define SG_L4_MAX	255

/* An options header (hop-by-hop, destination options) of len bytes at off
 * as Linux's ip6_parse_tlv takes it: Pad1 and PadN (PadN's data zeros, at
 * most 7 bytes of padding in a row), and up to max_opts options unknown to
 * Linux whose type says "skip" (top bits 00, RFC 8200 4.2), ending exactly
 * at len. Not ours (-1), so the kernel's: options Linux acts on (router
 * alert, CALIPSO, IOAM in hop-by-hop; jumbo payload and home address say
 * "discard" to us), options whose type says "discard", anything Linux
 * refuses, and headers with more than SG_EXT_MAX_TLVS options.
 *
 * Verifier: each option is read with one helper call (8 bytes: a PadN
 * with its data; a TCP header follows, so they are there), as
 * scan_tcp_options does. Read through packet pointers, the offset would
 * be precise and every path through the loop a state of its own (past
 * the 1M-instruction limit). */
static __always_inline int ext_tlvs_ok(struct xdp_md *ctx, u32 off, u32 len,
				       u32 hbh, u32 max_opts)
{
	u32 pos = 2, pad = max_opts, opts, type, optlen;
	u8 t[8];

#ifdef SG_COMPAT_LOAD_BYTES
	/* Its byte loop inside this loop is past the 1M-instruction limit:
	 * before Linux 5.18 only parse_ext's one-PadN header is answered. */
	return -1;
#endif
	/* pad and opts start at 0 as max_opts less a copy of itself that the
	 * verifier cannot see is the same (map memory is never tracked; the
	 * barrier keeps clang from folding it). From a constant 0 their
	 * values would be exact, each `> 7` decided and so made precise, and
	 * the loop's states at every count distinct (measured: 1.8 times the
	 * instructions verified for the whole program). */
	asm volatile("" : "+r"(pad));
	pad -= max_opts;
	opts = pad;

#pragma clang loop unroll(disable)
	for (int i = 0; i < SG_EXT_MAX_TLVS; i++) {
		if (pos >= len)
			break;
		if (sg_load_bytes(ctx, off + pos, t, sizeof(t), sizeof(t)))
			return -1;
		type = t[0];
		if (type == SG_IPV6_TLV_PAD1) {
			if (++pad > 7)
				return -1;
			pos++;
			continue;
		}
		optlen = t[1] + 2;
		if (pos + optlen > len)
			return -1;
		if (type == SG_IPV6_TLV_PADN) {
			pad += optlen;
			/* pad <= 7: optlen <= 7, its data t[2..optlen) */
			if (pad > 7 || (optlen > 2 && t[2]) ||
			    (optlen > 3 && t[3]) || (optlen > 4 && t[4]) ||
			    (optlen > 5 && t[5]) || (optlen > 6 && t[6]))
				return -1;
		} else {
			if ((type & 0xc0) ||
			    (hbh && (type == SG_IPV6_TLV_RA ||
				     type == SG_IPV6_TLV_CALIPSO ||
				     type == SG_IPV6_TLV_IOAM)) ||
			    ++opts > max_opts)
				return -1;
			pad = 0;
		}
		pos += optlen;
	}
	return pos == len ? 0 : -1;
}

/* Walk the extension headers from p->l4_off (just past the IPv6 header) to
 * the TCP header, taking only what Linux's ipv6_rcv and its extension
 * header handlers (net/ipv6/exthdrs.c, reassembly.c) take before TCP with
 * nothing else to do: anything they may refuse, forward or act on is not
 * ours (SG_PARSE_OTHER: the kernel does what it does). Per header:
 *   hop-by-hop  first only (ipv6_rcv parses it; later, nothing takes it)
 *   dest. opts  ext_tlvs_ok; ext_len8 and ext_opts are the host's
 *               net.ipv6.max_{hbh,dst}_opts_{length,number} (kernelconf.py)
 *   routing     segments left 0, type not 2 (Linux drops those it did not
 *               process itself), 3 or 4 (RPL, SRv6: off unless a sysctl
 *               says so). Type 0 with segments left is refused with an
 *               ICMP parameter problem, as any type Linux does not route;
 *               with none left Linux skips it (RFC 5095 3), and so do we.
 *   fragment    a first fragment (offset 0) or an atomic one (RFC 6946)
 *               whose fragmentable part is a multiple of 8 bytes (Linux
 *               refuses a shorter non-final fragment); p->frag if MF.
 * ctx NULL (tc): options are not looked at; XDP looked before it handed
 * the segment off. Verifier: each header is read through a pointer at an
 * offset bounded by SG_L4_MAX; both loops have constant bounds. */
static __always_inline int parse_ext(struct xdp_md *ctx, void *data,
				     void *data_end, struct sg_pkt *p,
				     u32 nexthdr, u32 plen, u32 ext_opts,
				     u32 ext_len8)
{
	u32 off = p->l4_off, start = p->l4_off, len, frag;
	u8 *h;

#pragma clang loop unroll(disable)
	for (int i = 0; i < SG_EXT_MAX_HDRS; i++) {
		if (nexthdr == IPPROTO_TCP)
			break;
		h = data + (off & SG_L4_MAX);
		if (off > SG_L4_MAX || (void *)(h + 8) > data_end)
			return SG_PARSE_OTHER;
		len = nexthdr == SG_IPPROTO_FRAGMENT ? 8 : (h[1] + 1) * 8;
		if (off + len > SG_L4_MAX || off + len - start > plen)
			return SG_PARSE_OTHER;
		if (nexthdr == SG_IPPROTO_HOPOPTS ||
		    nexthdr == SG_IPPROTO_DSTOPTS) {
			if ((nexthdr == SG_IPPROTO_HOPOPTS && i) ||
			    h[1] >= ext_len8)
				return SG_PARSE_OTHER;
			/* The shortest, padded with one PadN (a flood's, and
			 * what stacks send to pad an empty header), read here:
			 * the walk costs about 40 ns more a header. */
			if (ctx &&
			    !(len == 8 &&
			      *(__be16 *)&h[2] == bpf_htons(0x0104) &&
			      *(u32 *)&h[4] == 0) &&
			    ext_tlvs_ok(ctx, off, len,
					nexthdr == SG_IPPROTO_HOPOPTS,
					ext_opts))
				return SG_PARSE_OTHER;
		} else if (nexthdr == SG_IPPROTO_ROUTING) {
			if (h[3] || h[2] == 2 || h[2] == 3 || h[2] == 4)
				return SG_PARSE_OTHER;
		} else if (nexthdr == SG_IPPROTO_FRAGMENT) {
			frag = (u32)h[2] << 8 | h[3];
			if ((frag & SG_IP6_OFFMASK) ||
			    ((frag & SG_IP6_MF) &&
			     ((plen - (off + len - start)) & 7)))
				return SG_PARSE_OTHER;
			p->frag = frag & SG_IP6_MF;
		} else {
			return SG_PARSE_OTHER; /* AH, ESP, ICMPv6, ... */
		}
		nexthdr = h[0];
		off += len;
	}
	if (nexthdr != IPPROTO_TCP)
		return SG_PARSE_OTHER; /* not TCP, or beyond the bound */
	p->ext = off != start;
	/* Verifier: off's range here grows with each header walked, and each
	 * range would be a state of its own through the rest of the program
	 * (pointers at different ranges never prune). Masked past a barrier
	 * (clang knows off <= SG_L4_MAX and would drop the AND), the range
	 * becomes [low bits, SG_L4_MAX] for every chain length. */
	asm volatile("" : "+r"(off));
	p->l4_off = off & SG_L4_MAX;
	p->l4_len = plen - (off - start);
	return SG_PARSE_TCP;
}

/* ctx, ext_opts, ext_len8: see parse_ext. */
static __always_inline int parse_pkt(struct xdp_md *ctx, void *data,
				     void *data_end, struct sg_pkt *p,
				     u32 ext_opts, u32 ext_len8)
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
		/* Later fragments are the kernel's to reassemble. A first one
		 * holding the whole TCP header (a multiple of 8 bytes, so that
		 * reassembly keeps it as it is) is judged: see DESIGN.md. */
		if (ip->frag_off & bpf_htons(SG_IP_OFFMASK) ||
		    (ip->frag_off & bpf_htons(SG_IP_MF) && (tot - ihl) & 7))
			return SG_PARSE_OTHER;
		p->frag = !!(ip->frag_off & bpf_htons(SG_IP_MF));
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
		/* (A jumbogram, plen 0, carries a hop-by-hop option we leave.) */
		if (parse_ext(ctx, data, data_end, p, ip6->nexthdr, plen,
			      ext_opts, ext_len8) != SG_PARSE_TCP)
			return SG_PARSE_OTHER;
	} else {
		return SG_PARSE_OTHER;
	}

	/* The verifier needs the offset bounded before it is added to data. */
	if (p->l4_off > SG_L4_MAX)
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

/* Scan the options of the TCP header at `off` (doff bytes long) in an XDP
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
static __always_inline void scan_tcp_options(struct xdp_md *ctx, u32 off,
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

/* Linux's own layouts, read straight from the packet without the copy and
 * the scan above: a SYN's MSS, SACK-permitted, timestamps, NOP, window
 * scale (20 bytes) and a later segment's NOP, NOP, timestamps (12), as
 * the kernel's tcp_fast_parse_options takes the second. 1 when o is
 * filled. */
static __always_inline int linux_tcp_options(struct xdp_md *ctx,
					     const struct tcphdr *tcp,
					     struct sg_tcpopts *o)
{
	const u8 *opt = (const u8 *)(tcp + 1);
	void *data_end = (void *)(long)ctx->data_end;
	u32 len = tcp->doff * 4 - sizeof(*tcp);

	if (len == 20 && (void *)(opt + 20) <= data_end) {
		if (opt[0] != SG_OPT_MSS || opt[1] != 4 ||
		    *(u32 *)(opt + 4) != bpf_htonl(0x0402080a) ||
		    (*(u32 *)(opt + 16) & bpf_htonl(0xffffff00)) !=
			    bpf_htonl(0x01030300))
			return 0;
		o->mss = (u16)opt[2] << 8 | opt[3];
		__builtin_memcpy(&o->tsval, opt + 8, 4);
		__builtin_memcpy(&o->tsecr, opt + 12, 4);
		o->wscale = opt[19] > SG_MAX_WSCALE ? SG_MAX_WSCALE : opt[19];
		o->flags = SG_HAS_WSCALE | SG_HAS_SACK | SG_HAS_TS;
		return 1;
	}
	if (len != 12 || (void *)(opt + 12) > data_end ||
	    *(u32 *)opt != bpf_htonl(0x0101080a))
		return 0;
	__builtin_memcpy(&o->tsval, opt + 4, 4);
	__builtin_memcpy(&o->tsecr, opt + 8, 4);
	o->flags = SG_HAS_TS;
	return 1;
}

/* The options of the TCP header tcp at `off` into o, as Linux takes
 * them: its own layouts at once, any other by the scan. */
static __always_inline void parse_tcp_options(struct xdp_md *ctx,
					      const struct tcphdr *tcp, u32 off,
					      struct sg_tcpopts *o)
{
	if (!linux_tcp_options(ctx, tcp, o))
		scan_tcp_options(ctx, off, tcp->doff * 4, o);
}

#endif /* SG_PARSE_H */
