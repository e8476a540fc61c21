/* SPDX-License-Identifier: GPL-2.0-only */
/* The SYN cookie: SipHash-2-4 MAC plus the connection parameters it vouches for.
 *
 * Initial sequence number we send (the ISS):
 *
 *   31                                         8   7   5 4   2   1   0
 *  +--------------------------------------------+-----+-----+----+----+
 *  |            MAC: SipHash bits 0..23         | MSS | WS  |SACK|slot|
 *  +--------------------------------------------+-----+-----+----+----+
 *
 *   MSS   index into the address family's MSS table (below), rounded down
 *   WS    index into the window-scale table: 0 = the peer sent no window
 *         scale option, else the peer's shift, rounded down
 *   SACK  the peer sent SACK-permitted (and we offered it back)
 *   slot  which of the two secrets (odd/even, as in the seed) made the MAC
 *
 * The low byte is called `meta` below. The MAC is
 *   SipHash-2-4(key[slot], saddr | daddr | sport | dport | seq | meta)
 * over the bytes as they are on the wire, seen from the client (saddr is the
 * client), seq being the client's ISN. That is 17 bytes for IPv4, 41 for
 * IPv6: both end in one tail byte, `meta`, so the last SipHash block is
 * (len << 56) | meta. meta is inside the MAC, so the options cannot be
 * changed without breaking it; a forged ACK passes with probability 2^-24.
 *
 * The other SipHash output bits are not wasted: bits 24..43 are the IPv6 flow
 * label of the SYN-ACK (as the seed takes md5_buffer[1]) and bits 32..63 a
 * per-connection offset for our timestamp clock (as Linux randomizes ts_off).
 *
 * Messages are loaded as little-endian 64-bit words, as SipHash specifies;
 * BPF loads are host-order, so this matches the reference on little-endian
 * hosts (x86-64, arm64), which is where the cookie is minted and checked.
 */
#ifndef SG_COOKIE_H
#define SG_COOKIE_H

/* Round-down tables: the largest entry <= what the peer offered. 536 and
 * 1220 are the smallest MSS bpf_sk_assign_tcp_reqsk accepts (v4, v6). */
#define SG_MSS4_TABLE {536, 1200, 1360, 1400, 1440, 1452, 1460, 8960}
#define SG_MSS6_TABLE {1220, 1280, 1340, 1380, 1420, 1432, 1440, 8940}
/* Peer window-scale shifts; index 0 means "no window scaling". Linux offers
 * 7 (9-10 when tuned), Windows 8, macOS and FreeBSD 6. */
#define SG_WSCALE_TABLE {0, 0, 4, 6, 7, 8, 9, 10}

#define SG_MSS_DEFAULT4 536  /* RFC 1122: no MSS option */
#define SG_MSS_DEFAULT6 1220 /* RFC 8200 minimum MTU 1280 - 60 */

#define SG_META_SLOT(m) ((m) & 1)
#define SG_META_SACK(m) (((m) >> 1) & 1)
#define SG_META_WS(m)	(((m) >> 2) & 7)
#define SG_META_MSS(m)	(((m) >> 5) & 7)

#define SG_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
/* A SipHash round reads best as its four lines. */
/* clang-format off */
#define SG_SIPROUND                                                            \
	do {                                                                   \
		v0 += v1; v1 = SG_ROTL(v1, 13); v1 ^= v0; v0 = SG_ROTL(v0, 32); \
		v2 += v3; v3 = SG_ROTL(v3, 16); v3 ^= v2;                      \
		v0 += v3; v3 = SG_ROTL(v3, 21); v3 ^= v0;                      \
		v2 += v1; v1 = SG_ROTL(v1, 17); v1 ^= v2; v2 = SG_ROTL(v2, 32); \
	} while (0)
#define SG_SIPBLOCK(m)                                                         \
	do {                                                                   \
		v3 ^= (m);                                                     \
		SG_SIPROUND;                                                   \
		SG_SIPROUND;                                                   \
		v0 ^= (m);                                                     \
	} while (0)
/* clang-format on */

/* SipHash-2-4 of n full words m[0..n-1] and a last block `last` (length
 * byte and tail already in place). n is a constant at every call site. */
static __always_inline u64 siphash24(const struct sg_key *k, const u64 *m,
				     int n, u64 last)
{
	u64 v0 = k->k0 ^ 0x736f6d6570736575ULL;
	u64 v1 = k->k1 ^ 0x646f72616e646f6dULL;
	u64 v2 = k->k0 ^ 0x6c7967656e657261ULL;
	u64 v3 = k->k1 ^ 0x7465646279746573ULL;

#pragma unroll
	for (int i = 0; i < n; i++)
		SG_SIPBLOCK(m[i]);
	SG_SIPBLOCK(last);
	v2 ^= 0xff;
	SG_SIPROUND;
	SG_SIPROUND;
	SG_SIPROUND;
	SG_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* struct sg_flow (maps.h) is the cookie's input. */
static __always_inline u64 sg_cookie_hash(const struct sg_key *k,
					  const struct sg_flow *f, u8 meta)
{
	if (f->ipv6)
		return siphash24(k, f->w, 5, (41ULL << 56) | meta);
	return siphash24(k, f->w, 2, (17ULL << 56) | meta);
}

static __always_inline u32 sg_cookie_iss(u64 hash, u8 meta)
{
	return (u32)(hash & 0xffffff) << 8 | meta;
}

/* Index of the largest entry <= v in a sorted 8-entry table (entry 0 is
 * the floor), computed without branches: a branch per entry would hand the
 * verifier eight constant results to explore one by one downstream (see
 * scan_tcp_options). The empty asm hides v's range from clang, which would
 * otherwise fold the arithmetic back into compares, and BPF has no
 * set-on-condition instruction, so compares become branches. */
static __always_inline u32 sg_round_down_index(u32 v, const u16 *t)
{
	u32 idx = 0;

	asm volatile("" : "+r"(v));
#pragma unroll
	for (int i = 1; i < 8; i++)
		idx += ((u32)t[i] - 1 - v) >> 31; /* 1 when v >= t[i] */
	return idx;
}

static __always_inline u32 sg_mss_index(u32 mss, u8 ipv6)
{
	const u16 t4[8] = SG_MSS4_TABLE, t6[8] = SG_MSS6_TABLE;

	return sg_round_down_index(mss, ipv6 ? t6 : t4);
}

/* Table lookups are written as compare chains: clang would put an indexed
 * constant array in .rodata, which bcc does not relocate. */
static __always_inline u16 sg_mss_value(u8 idx, u8 ipv6)
{
	const u16 t4[8] = SG_MSS4_TABLE, t6[8] = SG_MSS6_TABLE;
	u16 v = ipv6 ? t6[0] : t4[0];

#pragma unroll
	for (int i = 1; i < 8; i++)
		if (idx == i)
			v = ipv6 ? t6[i] : t4[i];
	return v;
}

/* 0 when the peer sent no window scale (has_ws 0); else 1..7. */
static __always_inline u32 sg_wscale_index(u32 has_ws, u32 ws)
{
	const u16 t[8] = SG_WSCALE_TABLE;

	return has_ws * sg_round_down_index(ws, t);
}

static __always_inline u8 sg_wscale_value(u8 idx)
{
	const u8 t[8] = SG_WSCALE_TABLE;
	u8 v = t[0];

#pragma unroll
	for (int i = 1; i < 8; i++)
		if (idx == i)
			v = t[i];
	return v;
}

#endif /* SG_COOKIE_H */
