/* SPDX-License-Identifier: GPL-2.0-only */
/* Internet checksums (RFC 1071) for headers we write ourselves.
 *
 * The one's-complement sum does not care about byte order as long as every
 * word is taken as it sits in memory and the result is stored the same way,
 * so the callers add fields exactly as they write them (32-bit words are two
 * 16-bit words at once) into a 64-bit accumulator and fold at the end. No
 * bytes are read back from the packet and no loop over it is needed.
 */
#ifndef SG_CSUM_H
#define SG_CSUM_H

static __always_inline u16 sg_csum_fold(u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

/* Pseudo-header sum for TCP: addresses, protocol and TCP length. The IPv6
 * pseudo-header has the same two non-address words (RFC 8200 8.1). */
static __always_inline u64 sg_csum_pseudo(u64 addr_sum, u32 tcp_len)
{
	return addr_sum + bpf_htons(IPPROTO_TCP) + bpf_htons(tcp_len);
}

/* RFC 1624 eqn. 3: the checksum after one 16-bit word changed. */
static __always_inline u16 sg_csum_replace(u16 check, u16 old, u16 new)
{
	return sg_csum_fold((u16)~check + (u16)~old + (u64) new);
}

#endif /* SG_CSUM_H */
