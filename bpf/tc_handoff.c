/* synguard tc ingress hook: turn a cookie ACK that XDP validated into a
 * request socket, so the listener's accept() returns a normal connection
 * whose ISN is the cookie (syncache_socket in the seed).
 *
 * XDP left struct sg_handoff in the metadata area in front of the frame;
 * anything without it is not ours and passes untouched. Only XDP can write
 * metadata, so a peer cannot forge it.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "maps.h"
#include "parse.h"



#define SG_TCP_LISTEN 10

/* Count an event of address family ipv6 (0 also for family-less ones).
 * bcc rewrites map calls only in the main file and not inside macros, so
 * each hook's file has this function; the loader compiles both files as one
 * module, where the second copy is skipped. */
#ifndef SG_HAVE_COUNT
#define SG_HAVE_COUNT
static __always_inline void count(u32 idx, u32 ipv6)
{
	u64 *c;

	idx += ipv6 ? SG_COUNTER_SLOTS : 0;
	c = counters.lookup(&idx);
	if (c)
		*c += 1; /* per-CPU slot: no atomic needed */
}
#endif

/* bcc 0.26 cannot emit a kfunc call. This fake helper id compiles to
 * `call 0x7ffff0`; the loader (controller/kfunc.py) rewrites that
 * instruction into a call of bpf_sk_assign_tcp_reqsk (Linux >= 6.9) by its
 * BTF id before the program is loaded. Declared `int`: with `long` the
 * 32-bit error would be read back as a large positive number. */
static int (*bpf_sk_assign_tcp_reqsk)(struct __sk_buff *skb, void *sk,
				      struct sg_tcp_req_attrs *attrs,
				      int attrs__sz) = (void *)0x7ffff0;

int synguard_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct sg_handoff *h = (void *)(long)skb->data_meta;
	struct sg_tcp_req_attrs attrs;
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	struct bpf_tcp_sock *tp;
	struct sg_pkt p = {};
	int ret;

	if ((void *)(h + 1) > data || h->magic != SG_HANDOFF_MAGIC)
		return TC_ACT_OK;
	/* The kfunc reads the attributes from the stack, not from the packet. */
	__builtin_memcpy(&attrs, &h->attrs, sizeof(attrs));

	if (parse_pkt(data, data_end, &p) != SG_PARSE_TCP)
		goto abort;
	if (p.ipv6) {
		__builtin_memcpy(t.ipv6.saddr, &p.ip6->saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, &p.ip6->daddr, 16);
		t.ipv6.sport = p.tcp->source;
		t.ipv6.dport = p.tcp->dest;
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv6),
					BPF_F_CURRENT_NETNS, 0);
	} else {
		t.ipv4.saddr = p.ip4->saddr;
		t.ipv4.daddr = p.ip4->daddr;
		t.ipv4.sport = p.tcp->source;
		t.ipv4.dport = p.tcp->dest;
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4),
					BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		goto abort;
	if (sk->state != SG_TCP_LISTEN) {
		/* Another segment of this handshake made the socket in the
		 * meantime (see `handoffs` in xdp_synguard.c): it takes this one. */
		bpf_sk_release(sk);
		count(SG_C_raced, p.ipv6);
		return TC_ACT_OK;
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
	count(SG_C_completed, p.ipv6);
	return TC_ACT_OK;
abort:
	count(SG_C_aborted, p.ipv6);
	return TC_ACT_OK;
}
