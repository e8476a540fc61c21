/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The flood generators' rewrite of a template SYN (bench/livegen.c,
 * bench/bouncegen.c): the varying fields written, both checksums updated
 * from the template's, which was computed with those fields zero. The
 * callers have checked the frame's whole length against data_end.
 */

static __always_inline u32 fold(u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	return (s & 0xffff) + (s >> 16);
}

/* IPv4 source: a random host part in the template's /16, never .0.0; the
 * IP checksum updated. Returns the sum of what changed, for TCP's. */
static __always_inline u32 spoof_saddr4(u16 *ip, u32 r)
{
	ip[14 / 2] = (u16)((r % 65534) + 1);
	ip[10 / 2] = ~fold((u16)~ip[10 / 2] + ip[14 / 2]);
	return ip[14 / 2];
}

/* IPv6 source: a random last 16 bits in the template's /112, never 0
 * (IPv6 has no header checksum). Returns the sum of what changed, for
 * TCP's. */
static __always_inline u32 spoof_saddr6(u16 *ip6, u32 r)
{
	ip6[22 / 2] = (u16)((r % 65534) + 1);
	return ip6[22 / 2];
}

/* A random source port >= 1024 and ISN; the TCP checksum updated with s,
 * the sum of the pseudo header's changes. */
static __always_inline void spoof_ports(u16 *tcp, u32 r1, u32 r2, u32 s)
{
	tcp[0] = r1 | 0x0004; /* its high byte comes first */
	tcp[2] = r2;
	tcp[3] = r1 >> 16;
	s += tcp[0] + tcp[2] + tcp[3];
	tcp[8] = ~fold((u16)~tcp[8] + fold(s));
}
