/* SPDX-License-Identifier: GPL-2.0-only */
/* An RST written in place over a segment that no socket, syncache entry or
 * cookie accounts for, as Linux's tcp_v4_send_reset / tcp_v6_send_reset
 * writes it (RFC 9293 3.10.7.1): the segment carries ACK (only those come
 * here), so the RST takes its sequence number from that acknowledgment and
 * carries no ACK itself; no options, window 0. Map-free.
 */
#ifndef SG_RESET_H
#define SG_RESET_H

#include "reply.h"

/* 0: ready for XDP_TX; -1: the driver cannot resize the frame (untouched);
 * -2: the verifier's bounds (cannot happen; frame changed). ack_seq is the
 * segment's, as on the wire. */
static __always_inline int write_reset(struct xdp_md *ctx, u32 l3_off,
				       u32 frame_len, const struct sg_flow *f,
				       u8 ttl, __be32 ack_seq)
{
	struct sg_reply r;
	struct tcphdr *tcp;
	int err = write_reply(ctx, l3_off, frame_len, f, ttl, 0,
			      sizeof(struct tcphdr), &r);

	if (err)
		return err;
	tcp = r.tcp;
	tcp->seq = ack_seq;
	tcp->ack_seq = 0;
	*((u16 *)tcp + 6) = bpf_htons(5 << 12 | SG_TH_RST);
	tcp->window = 0;
	tcp->urg_ptr = 0;
	tcp->check = sg_csum_fold(r.sum + tcp->seq + *((u16 *)tcp + 6));
	return 0;
}

#endif /* SG_RESET_H */
