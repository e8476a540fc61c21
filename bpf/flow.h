/* SPDX-License-Identifier: GPL-2.0-only */
/* struct sg_flow (maps.h) from a parsed segment: the cookie's input and,
 * with the seq half zeroed, the key of the syncache and of the hand-offs.
 * Map-free; the layout is drawn at struct sg_flow. */
#ifndef SG_FLOW_H
#define SG_FLOW_H

#include "maps.h"
#include "parse.h"

/* Addresses, then ports | seq with seq = isn, the client's ISN (a SYN's
 * seq, or an ACK's seq - 1), as they are on the wire. Every byte is set:
 * the struct is a map key. */
static __always_inline void flow_from_pkt(const struct sg_pkt *p, u32 isn,
					  struct sg_flow *f)
{
	u64 ports_seq = (u64)(*(u32 *)p->tcp) | (u64)bpf_htonl(isn) << 32;

	f->ipv6 = p->ipv6;
	if (p->ipv6) {
		__builtin_memcpy(f->w, &p->ip6->saddr, 32);
		f->w[4] = ports_seq;
	} else {
		f->w[0] = *(u64 *)&p->ip4->saddr; /* saddr, daddr */
		f->w[1] = ports_seq;
		f->w[2] = f->w[3] = f->w[4] = 0;
	}
}

/* The 4-tuple of f without the ISN. */
static __always_inline void tuple_key(const struct sg_flow *f,
				      struct sg_flow *k)
{
	*k = *f;
	k->w[f->ipv6 ? 4 : 1] &= 0xffffffff; /* keep the ports, drop seq */
}

/* The 4-tuple key of a segment straight from the packet. */
static __always_inline void tuple_key_of(const struct sg_pkt *p,
					 struct sg_flow *k)
{
	flow_from_pkt(p, 0, k);
}

/* The client's address of f (its source), as the verified map keys it. */
static __always_inline void flow_source(const struct sg_flow *f,
					struct sg_addr *a)
{
	if (f->ipv6) {
		a->w[0] = f->w[0];
		a->w[1] = f->w[1];
	} else {
		a->w[0] = 0;
		a->w[1] = 0xffff0000ULL | f->w[0] << 32; /* ::ffff:saddr */
	}
}

#endif /* SG_FLOW_H */
