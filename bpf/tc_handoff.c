/* SPDX-License-Identifier: GPL-2.0-only */
/* synguard tc ingress hook: turn an ACK that XDP validated into a request
 * socket, so the listener's accept() returns a normal connection whose ISN
 * is the cookie (syncache_socket in the seed).
 *
 * XDP left the request socket's attributes in the handoffs map (maps.h)
 * under the ACK's 4-tuple, with the client's ISN; a segment that has no
 * pending entry with its seq is not ours and passes untouched.
 *
 * Built with SG_KERNEL_COOKIES the kernel's own cookie check makes the
 * socket: tc only makes the conntrack entry (when a firewall needs it).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "maps.h"
#include "parse.h"
#include "flow.h"

#ifdef SG_KERNEL_COOKIES
/* No request socket: the kernel's cookie check makes the socket. */
#else
/* bcc 0.26 cannot emit a kfunc call. This fake helper id compiles to
 * `call 0x7ffff0`; the loader (controller/kfunc.py) rewrites that
 * instruction into a call of bpf_sk_assign_tcp_reqsk (Linux >= 6.9) by its
 * BTF id before the program is loaded. Declared `int`: with `long` the
 * 32-bit error would be read back as a large positive number. */
static int (*bpf_sk_assign_tcp_reqsk)(struct __sk_buff *skb, void *sk,
				      struct sg_tcp_req_attrs *attrs,
				      int attrs__sz) = (void *)0x7ffff0;
#endif

#ifdef SG_CONNTRACK
/* The connection's conntrack entry, for a firewall that uses conntrack.
 * Conntrack never saw the SYN (XDP answered it) nor our SYN-ACK (XDP_TX),
 * so without an entry the client's ACK is a pickup in mid-stream: ct state
 * new with nf_conntrack_tcp_loose=1 (dropped by the common "ct state new
 * and not a SYN" rule), invalid with loose=0. We make the entry the
 * handshake would have made: original direction client -> server (the
 * ACK's own), IPS_SEEN_REPLY so that the ACK is ct state established. Its
 * TCP state is left to conntrack, which has no window scale for it (BPF
 * may not write ct->proto): controller/firewall.py therefore sets
 * nf_conntrack_tcp_be_liberal, or has XDP offer no window scale.
 *
 * The same fake-helper trick as bpf_sk_assign_tcp_reqsk above, one id each
 * (controller/kfunc.py); the verifier checks the arguments against the
 * kfuncs' BTF, so the struct types are opaque here. */
struct nf_conn;
struct nf_conn___init;
struct sg_ct_opts { /* struct bpf_ct_opts as Linux 6.1 has it (12 bytes, taken by later ones too) */
	s32 netns_id;
	s32 error;
	u8 l4proto;
	u8 dir;
	u8 reserved[2];
};
#define SG_IPS_SEEN_REPLY 0x2
#define SG_IPS_CONFIRMED  0x8
#define SG_CT_TIMEOUT_MS  10000 /* until conntrack sees the ACK, right behind */

static struct nf_conn___init *(*bpf_skb_ct_alloc)(
	struct __sk_buff *skb, struct bpf_sock_tuple *tuple, u32 tuple__sz,
	struct sg_ct_opts *opts, u32 opts__sz) = (void *)0x7ffff1;
static void (*bpf_ct_set_timeout)(struct nf_conn___init *ct,
				  u32 ms) = (void *)0x7ffff2;
static int (*bpf_ct_set_status)(const struct nf_conn___init *ct,
				u32 status) = (void *)0x7ffff3;
static struct nf_conn *(*bpf_ct_insert_entry)(struct nf_conn___init *ct) =
	(void *)0x7ffff4;
static void (*bpf_ct_release)(struct nf_conn *ct) = (void *)0x7ffff5;

static __always_inline void conntrack_entry(struct __sk_buff *skb,
					    const struct sg_pkt *p)
{
	struct sg_ct_opts opts = {.netns_id = BPF_F_CURRENT_NETNS,
				  .l4proto = IPPROTO_TCP};
	struct bpf_sock_tuple t = {};
	struct nf_conn___init *nct;
	struct nf_conn *ct;
	u32 size = sock_tuple(p, &t);

	nct = bpf_skb_ct_alloc(skb, &t, size, &opts, sizeof(opts));
	if (!nct) {
		count(SG_C_ctfailed, p->ipv6);
		return;
	}
	bpf_ct_set_timeout(nct, SG_CT_TIMEOUT_MS);
	/* The status may not differ from the entry's in IPS_CONFIRMED, which
	 * Linux 6.1 sets at insert and later kernels at alloc: try both. */
	if (bpf_ct_set_status(nct, SG_IPS_SEEN_REPLY | SG_IPS_CONFIRMED))
		bpf_ct_set_status(nct, SG_IPS_SEEN_REPLY);
	ct = bpf_ct_insert_entry(nct); /* frees nct on failure */
	if (!ct) {
		/* e.g. an entry for the 4-tuple exists */
		count(SG_C_ctfailed, p->ipv6);
		return;
	}
	bpf_ct_release(ct);
	count(SG_C_ctinserted, p->ipv6);
}
#endif

/* The connection's conntrack entry, where the data path was built with the
 * code for it and the firewall needs it (config). */
static __always_inline void conntrack_if_needed(struct __sk_buff *skb,
						const struct sg_pkt *p)
{
#ifdef SG_CONNTRACK
	u32 zero = 0;
	struct sg_config *cfg = config.lookup(&zero);

	if (cfg && (cfg->flags & SG_CF_CONNTRACK))
		conntrack_entry(skb, p);
#endif
}

/* The pending hand-off of this segment, taken (cleared) so that it makes
 * one request socket only; NULL if there is none. */
static __always_inline struct sg_handoff *take_handoff(const struct sg_pkt *p)
{
	struct sg_flow key;
	struct sg_handoff *h;
	u32 port = bpf_ntohs(p->tcp->dest), *protected;
	u8 flags = ((u8 *)p->tcp)[13];

	/* Only an ACK to a protected port can have one: everything else
	 * costs no hash lookup. */
	if ((flags & (SG_TH_SYN | SG_TH_ACK | SG_TH_RST)) != SG_TH_ACK)
		return NULL;
	protected = listeners.lookup(&port);
	if (!protected || *protected != SG_PORT_PROTECTED)
		return NULL;
	tuple_key_of(p, &key);
	h = handoffs.lookup(&key);
	if (!h || !h->pending || bpf_ntohl(p->tcp->seq) - 1 != h->isn)
		return NULL;
	h->pending = 0;
	return h;
}

#ifndef SG_KERNEL_COOKIES
/* The request socket from the hand-off's attributes, assigned to skb:
 * the listener's accept() then returns the connection. */
static __always_inline int make_reqsk(struct __sk_buff *skb,
				      const struct sg_pkt *p,
				      const struct sg_handoff *h)
{
	struct sg_tcp_req_attrs attrs;
	struct bpf_tcp_sock *tp;
	struct bpf_sock *sk;
	int ret;

	/* A copy: XDP may write the entry again meanwhile (another ACK). */
	__builtin_memcpy(&attrs, &h->attrs, sizeof(attrs));

	sk = lookup_sock(skb, p);
	if (!sk)
		goto abort;
	if (sk->state != SG_TCP_LISTEN) {
		/* Another segment of this handshake made the socket in the
		 * meantime (see handed_off_recently in xdp_synguard.c): it
		 * takes this one. */
		bpf_sk_release(sk);
		count(SG_C_raced, p->ipv6);
		return TC_ACT_UNSPEC;
	}
	/* The kfunc wants a struct sock with BTF; a tcp_sock starts with one. */
	tp = (void *)bpf_skc_to_tcp_sock(sk);
	if (!tp) {
		bpf_sk_release(sk);
		goto abort;
	}
	ret = bpf_sk_assign_tcp_reqsk(skb, tp, &attrs, sizeof(attrs));
	bpf_sk_release(sk);
	if (ret)
		goto abort;
	count(SG_C_completed, p->ipv6);
	conntrack_if_needed(skb, p);
	return TC_ACT_OK;
abort:
	count(SG_C_aborted, p->ipv6);
	return TC_ACT_UNSPEC;
}
#endif

int synguard_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct sg_handoff *h;
	struct sg_pkt p = {};

	/* Not ours: TC_ACT_UNSPEC, so that filters after ours still classify
	 * it. Any options header within parse_ext's bounds will do (255, 255):
	 * only an ACK that XDP judged, with the host's limits, has a hand-off,
	 * and this is where its TCP header is found. */
	if (parse_pkt(NULL, data, data_end, &p, 255, 255) != SG_PARSE_TCP)
		return TC_ACT_UNSPEC;
	h = take_handoff(&p);
	if (!h)
		return TC_ACT_UNSPEC;
#ifdef SG_KERNEL_COOKIES
	conntrack_if_needed(skb, &p);
	return TC_ACT_UNSPEC;
#else
	return make_reqsk(skb, &p, h);
#endif
}
