/* SPDX-License-Identifier: GPL-2.0-only */
/* Wire-format constants: the values RFCs and Linux's headers define, written
 * out here because the uapi headers bcc compiles against do not all have
 * them (and include/net/ is not uapi). Nothing here is synguard's own. */
#ifndef SG_PROTO_H
#define SG_PROTO_H

#define SG_ETH_P_8021Q	  0x8100
#define SG_ETH_P_8021AD	  0x88a8
#define SG_IPPROTO_ICMPV6 58

/* IPv6 extension headers (RFC 8200 4) and their fields. */
#define SG_IPPROTO_HOPOPTS  0
#define SG_IPPROTO_ROUTING  43
#define SG_IPPROTO_FRAGMENT 44
#define SG_IPPROTO_DSTOPTS  60
#define SG_IP6_OFFMASK	    0xfff8 /* fragment offset, in its 16-bit word */
#define SG_IP6_MF	    0x0001
#define SG_IPV6_TLV_PAD1    0
#define SG_IPV6_TLV_PADN    1
#define SG_IPV6_TLV_RA	    5	 /* router alert (RFC 2711) */
#define SG_IPV6_TLV_CALIPSO 7	 /* RFC 5570 */
#define SG_IPV6_TLV_IOAM    0x31 /* RFC 9486 */

#define SG_IP_DF       0x4000
#define SG_IP_MF       0x2000
#define SG_IP_OFFMASK  0x1fff
#define SG_IP_ECN_MASK 0x03 /* the two ECN bits of the TOS / traffic class */

/* TCP flags: byte 13 of the header. */
#define SG_TH_FIN 0x01
#define SG_TH_SYN 0x02
#define SG_TH_RST 0x04
#define SG_TH_ACK 0x10
#define SG_TH_ECE 0x40
#define SG_TH_CWR 0x80

/* TCP options we read (RFC 793, 7323, 2018, 2385, 5925). */
#define SG_OPT_EOL	0
#define SG_OPT_NOP	1
#define SG_OPT_MSS	2
#define SG_OPT_WSCALE	3
#define SG_OPT_SACKPERM 4
#define SG_OPT_TS	8
#define SG_OPT_MD5SIG	19
#define SG_OPT_AO	29
#define SG_MAX_WSCALE	14 /* RFC 7323 2.3: larger shifts are treated as 14 */

#define SG_TCP_LISTEN 10 /* enum tcp_state in include/net/tcp_states.h */

#define SG_MS 1000000ULL /* ns */

#endif /* SG_PROTO_H */
