/* SPDX-License-Identifier: GPL-2.0-only */
/* Kernel-format SYN cookies (cookies = kernel): for kernels without
 * bpf_sk_assign_tcp_reqsk (Linux 5.3-6.8), or when asked for. The kernel
 * mints the ISS (bpf_tcp_gen_syncookie) and, when the ACK comes, its own
 * cookie check (cookie_v4_check, cookie_v6_check) makes the socket. XDP only
 * writes and sends the SYN-ACK, so it must say what the kernel will decode:
 *
 *   ISS    the kernel's cookie: its hash, a minute counter and an index
 *          into its 4-entry MSS table (the client's MSS rounded down)
 *   TSval  the kernel's ms clock with the low 6 bits holding the options
 *          (as cookie_init_timestamp writes them):
 *
 *     31                              6   5    4   3        0
 *    +---------------------------------+-----+------+----------+
 *    |  ms clock, never ahead of it    | ECN | SACK |  wscale  |
 *    +---------------------------------+-----+------+----------+
 *                                       wscale 0xf: no window scaling
 *
 * The ACK's TSecr brings them back (cookie_timestamp_decode). The kernel
 * first subtracts its per-flow timestamp offset unless
 * net.ipv4.tcp_timestamps=2, which attach sets (controller/attach.py).
 * Without a timestamp the kernel decodes neither window scale nor SACK, so
 * the SYN-ACK then offers the MSS alone, as the kernel's own cookie SYN-ACK
 * does. The kernel's cookie secret is per boot and its cookies live 1-2
 * minutes: no rotation, no fleet mode.
 *
 * Map-free: the callers hold the listener.
 */
#ifndef SG_KCOOKIE_H
#define SG_KCOOKIE_H

#include "parse.h"

#define SG_KC_TSBITS	6
#define SG_KC_NO_WSCALE 0xf
#define SG_KC_SACK	(1 << 4)
#define SG_KC_ECN	(1 << 5)

/* Our TSval: the options in the low bits of the kernel's ms clock
 * (tcp_time_stamp_raw: CLOCK_MONOTONIC in ms; ts_off is 0 with
 * tcp_timestamps=2), moved back one step if that puts it ahead: the
 * kernel's socket goes on from its own clock, which must not look older
 * than our SYN-ACK to the client's PAWS check. wscale is the client's
 * shift, <= 14 as parse_tcp_options leaves it (4 bits here). */
static __always_inline u32 kc_tsval(u64 now_ns, u32 ws_on, u32 wscale, u32 sack,
				    u32 ecn)
{
	u32 now_ms = now_ns / SG_MS;
	u32 options = (ws_on ? wscale : SG_KC_NO_WSCALE) |
		      (sack ? SG_KC_SACK : 0) | (ecn ? SG_KC_ECN : 0);
	u32 ts = (now_ms & ~((1U << SG_KC_TSBITS) - 1)) | options;

	return ts > now_ms ? ts - (1U << SG_KC_TSBITS) : ts;
}

/* The helpers take the IP and TCP headers as packet memory of a size the
 * verifier knows, and the TCP header's size must be doff * 4: one call
 * per possible doff, each behind its own bounds check (a variable size
 * would be checked at its maximum, 60 bytes, past the end of most SYNs). */
#define SG_KC_GEN(doff, iph_len)                                    \
	if (th_doff == (doff)) {                                    \
		if ((void *)ip + (iph_len) > end ||                 \
		    (void *)th + (doff) * 4 > end)                  \
			return -1;                                  \
		return bpf_tcp_gen_syncookie(sk, ip, (iph_len), th, \
					     (doff) * 4);           \
	}
#define SG_KC_GEN_ALL(iph_len) \
	SG_KC_GEN(5, iph_len)  \
	SG_KC_GEN(6, iph_len)  \
	SG_KC_GEN(7, iph_len)  \
	SG_KC_GEN(8, iph_len)  \
	SG_KC_GEN(9, iph_len)  \
	SG_KC_GEN(10, iph_len) \
	SG_KC_GEN(11, iph_len) \
	SG_KC_GEN(12, iph_len) \
	SG_KC_GEN(13, iph_len) \
	SG_KC_GEN(14, iph_len) \
	SG_KC_GEN(15, iph_len)

/* The kernel's cookie for a SYN to listener sk: cookie | mss << 32, or < 0
 * when the kernel declines (tcp_syncookies changed, the accept queue full)
 * or the frame is not one it takes. */
static __always_inline s64 kc_gen_cookie(struct xdp_md *ctx,
					 const struct sg_pkt *p, void *sk)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	void *ip = data + (p->l3_off & 0x1f); /* <= 22: bounds it */
	struct tcphdr *th = data + (p->l4_off & 0xff);
	u32 th_doff;

	if ((void *)(th + 1) > end)
		return -1;
	th_doff = th->doff;
	if (p->ipv6) {
		SG_KC_GEN_ALL(sizeof(struct ipv6hdr))
	} else {
		SG_KC_GEN_ALL(sizeof(struct iphdr))
	}
	return -1;
}

/* 0 when the ACK's cookie (ack - 1) is one the kernel minted for this
 * 4-tuple and client ISN in the last two minutes. */
static __always_inline long kc_check_cookie(struct xdp_md *ctx,
					    const struct sg_pkt *p, void *sk)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	void *ip = data + (p->l3_off & 0x1f);
	struct tcphdr *th = data + (p->l4_off & 0xff);

	if ((void *)ip + sizeof(struct ipv6hdr) > end || (void *)(th + 1) > end)
		return -1;
	/* A v4 frame shorter than 40 bytes from ip would fail above: that is
	 * never an ACK with a TCP header (20 + 20). */
	if (p->ipv6)
		return bpf_tcp_check_syncookie(sk, ip, sizeof(struct ipv6hdr),
					       th, sizeof(*th));
	return bpf_tcp_check_syncookie(sk, ip, sizeof(struct iphdr), th,
				       sizeof(*th));
}

#endif /* SG_KCOOKIE_H */
