/* SPDX-License-Identifier: GPL-2.0-only */
/* synguard XDP hook: the seed's syncache and SYN cookies at the driver.
 *
 * For TCP to a protected port (listeners map) where the kernel has a
 * listener and no other socket for the 4-tuple (else XDP_PASS):
 *   SYN  syncache_add: answered in place with our SYN-ACK (XDP_TX), its ISS
 *        always a cookie; an entry is kept when there is room (cachelimit,
 *        bucketlimit, not paused, not syncookies_only). A SYN for an entry
 *        is answered from the entry again (dupsyn). The kernel never sees
 *        a SYN, except signed ones (TCP-MD5, TCP-AO: XDP cannot sign).
 *   ACK  syncache_expand: an entry must match exactly, else it is dropped
 *        (badack) and the cookie decides: a valid one goes on with its
 *        attributes in the handoffs map (maps.h), where tc_handoff.c turns
 *        them into a request socket (bpf_sk_assign_tcp_reqsk); a segment
 *        nobody knows gets an RST as Linux would send it, within the RST
 *        budgets, and is dropped beyond them.
 *   RST  syncache_chkrst: an in-window RST removes the entry.
 * Every reply spends its source prefix's budget (the reflection limit),
 * unless the source has completed a handshake with us (verified); a
 * completed handshake gives its SYN-ACK back. In monitor mode every frame
 * is judged and counted the same way and passed untouched; while draining,
 * SYNs and segments nobody knows go to the kernel.
 * ICMP/ICMPv6 unreachable quoting our SYN-ACK: syncache_unreach.
 * MPTCP listeners, and anything else, pass untouched.
 * Built with SG_KERNEL_COOKIES (cookies = kernel, kcookie.h) the kernel
 * mints the cookies and makes the sockets: the SYN-ACK carries its cookie,
 * a valid ACK goes up to its own cookie check, there is no hand-off to tc
 * (which only makes conntrack entries then), and MPTCP listeners are
 * answered too (the kernel's cookie path takes them).
 * Retransmissions and expiry are the syncache timer's (syncache_timer.c,
 * run by controller/syncache.py).
 * See cookie.h for the cookie, maps.h for the maps and counters.
 */
#include <uapi/linux/bpf.h>
#include "maps.h"
#include "parse.h"
#include "cookie.h"
#include "flow.h"
#include "ratelimit.h"
#include "reset.h"
#include "synack.h"
#ifdef SG_KERNEL_COOKIES
#include "kcookie.h"
#endif

#define SG_PAUSE_MAX_BACKOFF 6	  /* FreeBSD's TCP_SYNCACHE_MAX_BACKOFF */
#define SG_CONTINUE	     (-1) /* a step's "go on": every verdict is >= 0 */
#define SG_TCP_NEW_SYN_RECV  12	  /* a request socket's state (tcp_states.h) */

_Static_assert(SG_CF_WSCALE == SG_HAS_WSCALE && SG_CF_SACK == SG_HAS_SACK &&
		       SG_CF_TIMESTAMPS == SG_HAS_TS &&
		       !(SG_CF_ECN & SG_HAS_SIG),
	       "config switches and option flags share bits");

/* Parsed options and the entry being built live in a per-CPU scratch slot,
 * not on the stack. The verifier tracks stack values exactly, so option
 * flags set from constants while scanning would be known per path, every
 * later `if` on them decided, and the decisions would make the scan's
 * states distinct (no pruning; the 1M-instruction limit). Map memory is
 * never tracked: reads are unknown. It also keeps the stack under 512. */
struct sg_scratch {
	struct sg_tcpopts o;
	struct sg_syncache_entry e;
	struct sg_addr src; /* the client's address (source_of) */
	struct sg_flow key; /* c->key: the stack has no 48 bytes to spare */
	u64 tick;	    /* jiffies at this CPU's last coarse clock read */
	u64 tick_ns;	    /* what it read (coarse_clock) */
};
BPF_PERCPU_ARRAY(scratch, struct sg_scratch, 1);

/* One segment to a protected port, as the handlers' steps see it. */
struct sg_ctx {
	struct xdp_md *xdp;
	struct sg_pkt p;
	const struct sg_config *cfg;
#ifdef SG_KERNEL_COOKIES
	/* The listener the kernel's cookie helpers take, held from sock_state
	 * until the handler returns (release_listener). In the place of sec,
	 * which these cookies do without: the stack has no 8 bytes to spare. */
	struct bpf_sock *sk;
#else
	const struct sg_secrets *sec;
#endif
	struct sg_scratch *s; /* the options (s->o) once parsed */
	/* the cookie's input: 4-tuple and the client's ISN */
	struct sg_flow flow;
	/* the 4-tuple: key of the syncache and the hand-offs (in c->s) */
	struct sg_flow *key;
	u64 hash; /* the cookie's SipHash (SYN); picks the entry's bucket */
	u64 now;
};

/* --- the socket, the hand-off window, the reflection limit ---------------- */

/* Not a tcp_state: a listener that bpf_sk_assign_tcp_reqsk refuses
 * (sk_is_mptcp: -EINVAL), as Go's net package makes them since Go 1.24.
 * The kernel answers for those, with its own cookies if need be. */
#define SG_MPTCP_LISTEN 0x100

/* The state of the kernel's socket for the 4-tuple (see lookup_sock), -1 if
 * there is none. */
static __always_inline int sock_state(struct sg_ctx *c)
{
	struct bpf_sock *sk = lookup_sock(c->xdp, &c->p);
	int state;

	if (!sk)
		return -1;
	state = sk->state;
#ifdef SG_KERNEL_COOKIES
	if (state == SG_TCP_LISTEN) {
		c->sk = sk; /* for the cookie helpers: one lookup a segment */
		return state;
	}
#else
	if (state == SG_TCP_LISTEN && bpf_skc_to_mptcp_sock(sk))
		state = SG_MPTCP_LISTEN;
#endif
	bpf_sk_release(sk);
	return state;
}

#ifdef SG_KERNEL_COOKIES
static __always_inline int release_listener(struct sg_ctx *c, int verdict)
{
	if (c->sk)
		bpf_sk_release(c->sk);
	return verdict;
}
#else
#define release_listener(c, verdict) (verdict)
#endif

/* A protected port with no listener, an MPTCP listener, or a 4-tuple the
 * kernel owns. */
static __always_inline int leave_to_kernel(int state, u32 ipv6)
{
	u32 counter = SG_C_established;

	if (state < 0)
		counter = SG_C_nolistener;
	else if (state == SG_MPTCP_LISTEN)
		counter = SG_C_mptcp;
	count(counter, ipv6);
	return XDP_PASS;
}

/* A NAPI poll runs XDP (and a list receive runs tc) over a whole batch
 * before TCP sees any of it, so segments right behind the third ACK find no
 * socket yet: the first data segment also carries a valid cookie and would
 * get a second request socket (the kernel drops it as a duplicate), the
 * later ones carry none and would be dropped here. Either way the client
 * waits out a retransmission timeout. So segments of a 4-tuple handed off
 * less than SG_HANDOFF_WINDOW_NS ago go up plain and find the new socket.
 * The window is far below the minimum RTO (200 ms), so a retransmission
 * after a failed hand-off is handed off again. */
#define SG_HANDOFF_WINDOW_NS (10 * SG_MS)

/* Whether a segment is of the handshake h handed off, not of a newer
 * connection on the same 4-tuple: a client that reuses its port at once
 * (ab, a proxy's pool, with no TIME_WAIT on the server) sends a new ACK
 * milliseconds later. Until the kernel has the socket it has sent nothing
 * but the SYN-ACK, so every segment of that handshake acks iss + 1; a new
 * one acks its own ISS, and passing its ACK up plain would draw the
 * kernel's RST. (The client's ISN cannot tell them apart: Linux makes a
 * reused 4-tuple's ISN the old one plus its clock.) */
static __always_inline int of_handoff(const struct sg_ctx *c,
				      const struct sg_handoff *h)
{
	return bpf_ntohl(c->p.tcp->ack_seq) - 1 == h->iss;
}

/* h (if any) is of c's handshake and less than the window old. */
static __always_inline int in_window(const struct sg_ctx *c,
				     const struct sg_handoff *h)
{
	return h && c->now - h->at_ns < SG_HANDOFF_WINDOW_NS &&
	       of_handoff(c, h);
}

static __always_inline int handed_off_recently(struct sg_ctx *c)
{
	struct sg_handoff *h = handoffs.lookup(c->key);

	/* The ACK path's clock read: a bogus pure ACK never gets here. */
	c->now = bpf_ktime_get_ns();
	return in_window(c, h);
}

/* A segment with no socket of a 4-tuple handed off less than
 * SG_RST_HOLD_NS ago belongs to a connection that is being made: its third
 * ACK was lost after XDP passed it (a full accept queue, a drop in the
 * stack), or is still on its way up. The client retransmits from its
 * first data segment, whose cookie is handed off again, so such a segment
 * is dropped, never reset. One that acks more than the handshake's ISS is
 * of a connection that was made and is gone (its late FIN): reset, as the
 * kernel would. Looked up only for a segment that would get an RST: an
 * ACK flood beyond the budgets never pays for it. */
#define SG_RST_HOLD_NS (3000 * SG_MS)

static __always_inline int handed_off_lately(const struct sg_ctx *c)
{
	struct sg_handoff *h = handoffs.lookup(c->key);

	return h && (c->now < h->at_ns || c->now - h->at_ns < SG_RST_HOLD_NS) &&
	       of_handoff(c, h);
}

/* --- modes, clocks, the reflection limit, verified sources --------------- */

static __always_inline int monitoring(const struct sg_ctx *c)
{
	return c->cfg->flags & SG_CF_MONITOR;
}

static __always_inline int draining(const struct sg_ctx *c)
{
	return c->cfg->flags & SG_CF_DRAIN;
}

/* The verdict enforce mode gives; monitor mode passes every frame. */
static __always_inline int enforce(const struct sg_ctx *c, int verdict)
{
	return monitoring(c) ? XDP_PASS : verdict;
}

/* CLOCK_MONOTONIC_COARSE, read once per tick on each CPU: within a tick
 * (jiffies unchanged) every call returns that first read. bpf_jiffies64 is
 * inlined into a load, while a read of the coarse clock costs 17 ns here
 * and a precise one 34, so a flood's SYNs share one read per tick. Up to
 * two ticks (2-20 ms) behind the precise clock, never ahead: enough where
 * a budget's burst covers at least SG_COARSE_TAU_NS. Needs c->s. */
#define SG_COARSE_TAU_NS (64 * SG_MS)

static __always_inline u64 read_coarse_clock(void)
{
#ifdef SG_COMPAT_COARSE_CLOCK /* Linux < 5.11 has no coarse clock for BPF */
	return bpf_ktime_get_ns();
#else
	return bpf_ktime_get_coarse_ns();
#endif
}

static __always_inline u64 coarse_clock(struct sg_ctx *c)
{
#ifdef SG_COMPAT_JIFFIES /* Linux < 5.5 */
	return read_coarse_clock();
#else
	struct sg_scratch *s = c->s;
	u64 tick = bpf_jiffies64();

	if (s->tick != tick) {
		s->tick = tick;
		s->tick_ns = read_coarse_clock();
	}
	return s->tick_ns;
#endif
}

/* The client's address of the flow in c->s->src. */
static __always_inline struct sg_addr *source_of(struct sg_ctx *c)
{
	flow_source(&c->flow, &c->s->src);
	return &c->s->src;
}

/* The source completed a handshake with us within verified_ns (c->s->src
 * set). c->now may be the coarse clock, behind the time written. */
static __always_inline int source_verified(const struct sg_ctx *c)
{
	u64 *at = verified.lookup(&c->s->src);

	return at && (c->now < *at || c->now - *at < c->cfg->verified_ns);
}

/* A SYN-ACK to the SYN's source prefix fits its budget, or the source is
 * verified. Looked up only beyond the budget: a flood never pays for it. */
static __always_inline int synack_allowed(struct sg_ctx *c)
{
	if (!c->cfg->synack_interval_ns ||
	    reply_budget(c->cfg, source_of(c), c->p.ipv6, c->now))
		return 1;
	if (!source_verified(c))
		return 0;
	count(SG_C_verified, c->p.ipv6);
	return 1;
}

/* Note the SYN's source among the latest the limit dropped (maps.h). */
static __always_inline void sample_limited(struct sg_ctx *c)
{
	u32 zero = 0;
	struct sg_limited *l = limited.lookup(&zero);

	if (l)
		l->src[l->n++ & (SG_LIMITED_SAMPLES - 1)] = c->s->src;
}

/* A handshake with c's source completed (hand_off; in monitor mode the
 * kernel's own): the SYN-ACK it answered is given back to its prefix's
 * budget, and the source is verified from now. The map is written only
 * for a new source or one whose time is old (a sixteenth of its
 * lifetime), so a busy client costs no LRU update per connection. */
static __always_inline void handshake_done(struct sg_ctx *c)
{
	const struct sg_config *cfg = c->cfg;
	struct sg_addr *src = source_of(c);
	u64 *at;

	if (cfg->synack_interval_ns) {
		u32 idx = prefix_bucket(src, c->p.ipv6, cfg);
		u64 *tat = reply_tat.lookup(&idx);

		/* on the SYNs' coarse clock: the precise one may run a tick
		 * ahead of it, and a bucket given back to a time ahead of the
		 * SYNs' now would lose part of its burst */
		if (tat)
			gcra_give_back(tat, coarse_clock(c),
				       cfg->synack_interval_ns);
	}
	if (!cfg->verified_ns)
		return;
	at = verified.lookup(src);
	if (!at)
		verified.update(src, &c->now);
	else if (c->now - *at > cfg->verified_ns / 16)
		*at = c->now;
}

/* An RST for a segment nobody knows fits both budgets: this CPU's share of
 * rst_rate, and its source prefix's reply budget (unless verified). Both
 * are checked before either is spent. */
BPF_PERCPU_ARRAY(rst_tat, u64, 1);

static __always_inline int reset_allowed(struct sg_ctx *c)
{
	const struct sg_config *cfg = c->cfg;
	u32 zero = 0;
	u64 *tat = rst_tat.lookup(&zero);

	c->now = coarse_clock(c); /* the budgets' bursts are a second long */
	if (!tat || !gcra_fits(*tat, c->now, cfg->rst_tau_ns))
		return 0;
	if (!reply_budget(cfg, source_of(c), c->p.ipv6, c->now)) {
		if (!source_verified(c))
			return 0;
		count(SG_C_verified, c->p.ipv6);
	}
	gcra_take(tat, c->now, cfg->rst_interval_ns, cfg->rst_tau_ns);
	return 1;
}

/* --- the syncache's bookkeeping (syncache_drop: common.c) ---------------- */

/* FreeBSD's syncache_pause (after r178285): on overflow use cookies only
 * for pause_ms, doubled (up to 2^6 times) when the last pause ended less
 * than one pause length ago. */
static __always_inline void syncache_pause(struct sg_syncache_state *st,
					   const struct sg_config *cfg, u64 now)
{
	u64 delta;
	u32 backoff = st->backoff;

	/* pausetime 0: never pause. Nor with syncookies=0: the entries are
	 * all there is, and a pause would drop every SYN while it lasts. */
	if (!cfg->pause_ms || !cfg->syncookies || now < st->pause_until_ns)
		return;
	delta = ((u64)cfg->pause_ms * SG_MS) << (backoff & 7);
	if (st->pause_until_ns && now - st->pause_until_ns < delta) {
		if (backoff < SG_PAUSE_MAX_BACKOFF) {
			delta <<= 1;
			backoff++;
		}
	} else {
		delta = (u64)cfg->pause_ms * SG_MS;
		backoff = 0;
	}
	st->backoff = backoff;
	st->pause_until_ns = now + delta;
	st->pauses++;
}

/* syncache_insert, with room checked first: 0 when the entry is in. */
static __always_inline int syncache_insert(struct sg_flow *key,
					   struct sg_syncache_entry *e,
					   const struct sg_config *cfg, u64 now)
{
	u32 zero = 0, *b = bucket_count(e->bucket);
	struct sg_syncache_state *st = syncache_state.lookup(&zero);
	u32 overflow;

	if (!st || !b)
		return -1; /* (a pause was decided before: syncache_in_use) */
	if (st->entries >= cfg->cachelimit)
		overflow = SG_C_zonefail;
	else if (*b >= cfg->bucketlimit)
		overflow = SG_C_bucketoverflow;
	else {
		__sync_fetch_and_add(&st->entries, 1);
		__sync_fetch_and_add(b, 1);
		if (!syncache.insert(key, e)) {
			count(SG_C_added, key->ipv6);
			return 0;
		}
		/* The map is full or out of memory: the zone failed. */
		__sync_fetch_and_add(&st->entries, -1);
		__sync_fetch_and_add(b, -1);
		overflow = SG_C_zonefail;
	}
	count(overflow, key->ipv6);
	syncache_pause(st, cfg, now);
	return -1;
}

/* A listener and nothing else for the 4-tuple, and the scratch slot in
 * c->s: SG_CONTINUE, or the verdict. */
static __always_inline int listener_only(struct sg_ctx *c)
{
	u32 zero = 0;
	int state = sock_state(c);

	if (state != SG_TCP_LISTEN)
		return leave_to_kernel(state, c->p.ipv6);
	c->s = scratch.lookup(&zero);
	if (!c->s)
		return XDP_PASS;
	c->key = &c->s->key;
	return SG_CONTINUE;
}

/* --- SYN: syncache_add -----------------------------------------------------
 * Steps, in the order of tcp_handle_syn in the kernel's
 * test_tcp_custom_syncookie.c: validate, parse options, look for an entry,
 * negotiate, prepare the cookie, respond (and remember). */

/* The syncache keeps entries unless cookies carry everything. */
static __always_inline int keeps_entries(const struct sg_config *cfg)
{
	return cfg->syncookies_only == 0 || cfg->syncookies == 0;
}

/* Whether this SYN looks for and makes an entry. Not in monitor mode, nor
 * while the syncache is paused: cookies carry every connection then, and a flood is spared the
 * lookup and the entry built for nothing. With syncookies=0 the entries are
 * all there is, so they still count (and a SYN without room is dropped). */
static __always_inline int syncache_in_use(const struct sg_ctx *c)
{
	u32 zero = 0;
	struct sg_syncache_state *st;

	/* Monitor mode: the kernel answers, so an entry would retransmit a
	 * SYN-ACK the client never had from us. */
	if (!keeps_entries(c->cfg) || monitoring(c))
		return 0;
	if (!c->cfg->syncookies)
		return 1;
	st = syncache_state.lookup(&zero);
	return st && c->now >= st->pause_until_ns;
}

/* The SYN path's clock: the coarse one (a tenth of a SYN's cost saved),
 * since our TSval counts ~1 ms units and a burst allowance of at least
 * SG_COARSE_TAU_NS moves by a tick's worth at most. Short bursts keep the
 * precise clock, and so do entries (entry_clock). */
static __always_inline u64 syn_clock(struct sg_ctx *c)
{
	const struct sg_config *cfg = c->cfg;

	if (cfg->synack_interval_ns && cfg->synack_tau_ns < SG_COARSE_TAU_NS)
		return bpf_ktime_get_ns();
	return coarse_clock(c);
}

/* Whether this SYN looks for and makes an entry (syncache_in_use), and if
 * so the precise clock in c->now: the controller times the entries'
 * retransmissions against CLOCK_MONOTONIC. A paused syncache (a flood's)
 * is told on the coarse clock, up to two ticks behind: the pause ends up
 * to two ticks late, and its SYNs never pay for a precise read. */
static __always_inline int entry_clock(struct sg_ctx *c)
{
	if (!syncache_in_use(c))
		return 0;
	c->now = bpf_ktime_get_ns();
	return 1;
}

/* Ours to answer: a listener and nothing else for the 4-tuple, not signed,
 * the source prefix within its SYN-ACK budget. Leaves the options in
 * c->s->o and the flow in c->flow and c->key. */
static __always_inline int syn_validate(struct sg_ctx *c)
{
	struct sg_tcpopts *o;
	int r = listener_only(c);

	if (r != SG_CONTINUE)
		return r;
	o = &c->s->o;
	/* no MSS option */
	o->mss = c->p.ipv6 ? SG_MSS_DEFAULT6 : SG_MSS_DEFAULT4;
	parse_tcp_options(c->xdp, c->p.tcp, c->p.l4_off, o);
	if (o->flags & SG_HAS_SIG) {
		count(SG_C_signed, c->p.ipv6);
		return XDP_PASS;
	}
	c->now = syn_clock(c);
	flow_from_pkt(&c->p, bpf_ntohl(c->p.tcp->seq), &c->flow);
	tuple_key(&c->flow, c->key);
	if (!synack_allowed(c)) {
		sample_limited(c);
		count(SG_C_ratelimited, c->p.ipv6);
		return enforce(c, XDP_DROP);
	}
	return SG_CONTINUE;
}

/* A SYN for an entry: the same SYN-ACK again (same ISS), the retransmit
 * counter reset and, as the seed does, the client's timestamp taken up (or
 * timestamps dropped if this SYN has none). The entry, or NULL. */
static __always_inline struct sg_syncache_entry *syn_dupsyn(
	struct sg_ctx *c, struct sg_synack *sa)
{
	struct sg_syncache_entry *e;
	const struct sg_tcpopts *o = &c->s->o;

	e = syncache.lookup(c->key);
	if (!e)
		return NULL;
	if ((e->flags & SG_SCF_TIMESTAMP) && (o->flags & SG_HAS_TS))
		e->ts_recent = bpf_ntohl(o->tsval);
	else
		e->flags &= ~SG_SCF_TIMESTAMP;
	e->rxmits = 0;
	e->rxt_ns = c->now + (u64)c->cfg->rexmt_ms * SG_MS;
	sa->iss = e->iss;
	sa->ack = e->irs + 1;
	sa->mss = e->mss;
	sa->window = e->wnd;
	sa->ttl = e->ttl;
	sa->flowlabel = e->flowlabel;
	sa->ws_on = !!(e->flags & SG_SCF_WINSCALE);
	sa->wscale = e->rcv_wscale;
	sa->sack = !!(e->flags & SG_SCF_SACK);
	sa->ts = !!(e->flags & SG_SCF_TIMESTAMP);
	sa->ecn = !!(e->flags & SG_SCF_ECN);
	sa->tsval = e->ts;
	sa->tsecr = e->ts_recent;
	return e;
}

/* ECN setup as the kernel's tcp_ecn_create_request: ECE and CWR in the SYN,
 * which itself is not ECN-capable (RFC 3168 6.1.1) unless it has a reserved
 * bit set (AE, of Accurate ECN, is one), and net.ipv4.tcp_ecn on (a route's
 * ecn feature is beyond XDP's sight). Only with timestamps: an ACK without
 * an entry tells the ECN choice through the TSval we sent (see
 * syn_prepare_cookie), as Linux's own cookies do. */
static __always_inline u8 syn_ecn(const struct sg_ctx *c, u8 ts)
{
	u8 flags = ((u8 *)c->p.tcp)[13];
	u8 res1 = ((u8 *)c->p.tcp)[12] & 0x0f;
	u8 tos;

	if ((flags & (SG_TH_ECE | SG_TH_CWR)) != (SG_TH_ECE | SG_TH_CWR) ||
	    !(c->cfg->flags & SG_CF_ECN) || !ts)
		return 0;
	if (c->p.ipv6)
		tos = (bpf_ntohl(*(__be32 *)c->p.ip6) >> 20) & 0xff;
	else
		tos = c->p.ip4->tos;
	return (tos & SG_IP_ECN_MASK) == 0 || res1;
}

/* What we answer with: the peer's offer, masked by what the kernel's
 * sysctls let the hand-off accept (same bits), without branches; our MSS
 * clamped to the peer's and to the table's floor. */
static __always_inline void syn_negotiate(struct sg_ctx *c,
					  struct sg_synack *sa)
{
	const struct sg_tcpopts *o = &c->s->o;
	const struct sg_config *cfg = c->cfg;
	u32 offered = o->flags & cfg->flags, our_mss, mss;
	u8 ipv6 = c->p.ipv6;

	sa->ws_on = (offered & SG_HAS_WSCALE) >> 1;
	sa->sack = (offered & SG_HAS_SACK) >> 2;
	sa->ts = (offered & SG_HAS_TS) >> 3;
#ifdef SG_KERNEL_COOKIES
	/* Without a timestamp to carry them the kernel decodes neither. */
	sa->ws_on &= sa->ts;
	sa->sack &= sa->ts;
#endif
	sa->ecn = syn_ecn(c, sa->ts);
	sa->wscale = cfg->wscale;
	our_mss = ipv6 ? cfg->mss6 : cfg->mss4;
	mss = o->mss < our_mss ? o->mss : our_mss;
	sa->mss = mss < sg_mss_value(0, ipv6) ? sg_mss_value(0, ipv6) : mss;
	sa->window = cfg->window;
	sa->ttl = cfg->ttl;
	sa->ack = bpf_ntohl(c->p.tcp->seq) + 1;
	sa->tsecr = bpf_ntohl(o->tsval);
}

#ifdef SG_KERNEL_COOKIES
/* The ISS from the kernel and the TSval that tells it the options
 * (kcookie.h). 0, or -1 when the kernel declines. */
static __always_inline int syn_prepare_cookie(struct sg_ctx *c,
					      struct sg_synack *sa)
{
	s64 cookie;

	if (!c->sk)
		return -1;
	cookie = kc_gen_cookie(c->xdp, &c->p, c->sk);
	if (cookie < 0)
		return -1;
	sa->iss = (u32)cookie;
	/* The cookie is the kernel's keyed hash: its bits pick the bucket. */
	c->hash = (u64)sa->iss << 32;
	sa->flowlabel = 0;
	/* c->now may be the coarse clock: behind the kernel's, never ahead */
	if (sa->ts)
		sa->tsval = kc_tsval(c->now, sa->ws_on, c->s->o.wscale,
				     sa->sack, sa->ecn);
	return 0;
}
#else
/* The ISS: the cookie over the flow and what was negotiated (cookie.h);
 * the IPv6 flow label and our TSval from the hash's other bits. The TSval's
 * low bit says whether ECN was set up. Always 0. */
static __always_inline int syn_prepare_cookie(struct sg_ctx *c,
					      struct sg_synack *sa)
{
	const struct sg_tcpopts *o = &c->s->o;
	u32 mss_idx, ws_idx, meta, slot = c->sec->active & 1;
	u64 h;

	mss_idx = sg_mss_index(sa->mss, c->p.ipv6);
	ws_idx = sg_wscale_index(sa->ws_on, o->wscale);
	meta = mss_idx << 5 | ws_idx << 2 | sa->sack << 1 | slot;
	h = sg_cookie_hash(&c->sec->keys[slot], &c->flow, meta);
	c->hash = h;
	sa->iss = sg_cookie_iss(h, meta);
	sa->flowlabel = c->p.ipv6 ? (h >> 24) & 0xfffff : 0;
	if (sa->ts) /* ~1 ms clock with a keyed per-connection offset */
		sa->tsval = (((u32)(h >> 32) + (u32)(c->now >> 20)) & ~1U) |
			    sa->ecn;
	return 0;
}
#endif

/* Keep the SYN-ACK the frame now holds in e, for the retransmissions. */
static __always_inline int syncache_keep_frame(struct sg_ctx *c,
					       const struct sg_synack *sa,
					       struct sg_syncache_entry *e)
{
	/* u64 and masked: a u32 would be checked as a truncated copy while
	 * the 64-bit sum is passed on, which the verifier sees unbounded. */
	u64 len = synack_len(c->p.l3_off, c->p.ipv6, sa) & 0xff;

	/* 58 is the shortest SYN-ACK. The barrier keeps clang from folding
	 * the two checks into one unsigned compare of a copy (len - 58 > 46),
	 * which bounds nothing. */
	if (len < 58)
		return -1;
	asm volatile("" : "+r"(len));
	if (len > sizeof(e->frame))
		return -1;
	if (sg_load_bytes(c->xdp, 0, e->frame, len, sizeof(e->frame)))
		return -1;
	e->frame_len = len;
	e->l3_off = c->p.l3_off;
	return 0;
}

/* The entry for what we just sent. 0 when it is in. */
static __always_inline int syncache_add(struct sg_ctx *c,
					const struct sg_synack *sa)
{
	struct sg_syncache_entry *e = &c->s->e;
	const struct sg_tcpopts *o = &c->s->o;

	if (syncache_keep_frame(c, sa, e))
		return -1;
	e->added_ns = c->now;
	e->rxt_ns = c->now + (u64)c->cfg->rexmt_ms * SG_MS;
	e->irs = sa->ack - 1;
	e->iss = sa->iss;
	e->ts = sa->tsval;
	e->ts_recent = sa->tsecr;
	e->flowlabel = sa->flowlabel;
	e->peer_mss = o->mss;
	e->mss = sa->mss;
	e->wnd = sa->window;
	e->bucket = (c->hash >> 44) & (SG_SYNCACHE_BUCKETS - 1);
	e->snd_wscale = o->wscale;
	e->rcv_wscale = sa->wscale;
	e->flags = (sa->ws_on ? SG_SCF_WINSCALE : 0) |
		   (sa->ts ? SG_SCF_TIMESTAMP : 0) |
		   (sa->sack ? SG_SCF_SACK : 0) | (sa->ecn ? SG_SCF_ECN : 0);
	e->rxmits = 0;
	e->ttl = sa->ttl;
	return syncache_insert(c->key, e, c->cfg, c->now);
}

/* Our SYN-ACK in place of the SYN: SG_CONTINUE, or the verdict when it
 * cannot be written (then the kernel answers the SYN itself). */
static __always_inline int syn_respond(struct sg_ctx *c,
				       const struct sg_synack *sa)
{
	int r = write_synack(c->xdp, c->p.l3_off, c->p.frame_len, &c->flow, sa);

	if (r == -1) {
		count(SG_C_unsupported, c->p.ipv6);
		return XDP_PASS;
	}
	return r ? XDP_ABORTED : SG_CONTINUE;
}

static __always_inline int handle_syn(struct sg_ctx *c)
{
	struct sg_syncache_entry *dup = NULL;
	struct sg_synack sa = {};
	u32 counter = SG_C_sendcookie;
	int r, cache;

	if (draining(c)) { /* the kernel answers SYNs again */
		count(SG_C_drained, c->p.ipv6);
		return XDP_PASS;
	}
	r = syn_validate(c);
	if (r != SG_CONTINUE)
		return r;
	cache = entry_clock(c);
	if (cache)
		dup = syn_dupsyn(c, &sa);
	if (dup) {
		counter = SG_C_dupsyn;
	} else {
		syn_negotiate(c, &sa);
		if (syn_prepare_cookie(c, &sa)) {
			/* the kernel answers it, or drops it */
			count(SG_C_nocookie, c->p.ipv6);
			return XDP_PASS;
		}
	}
	if (monitoring(c)) { /* what enforce mode would have sent */
		count(counter, c->p.ipv6);
		return XDP_PASS;
	}
	r = syn_respond(c, &sa);
	if (r != SG_CONTINUE)
		return r;
	if (dup) /* its SYN-ACK echoes the new timestamp: retransmit that one */
		syncache_keep_frame(c, &sa, dup);
	else if (cache && syncache_add(c, &sa) && !c->cfg->syncookies) {
		/* No entry and no cookies: the seed sends nothing. */
		count(SG_C_dropped, c->p.ipv6);
		return XDP_DROP;
	}
	count(counter, c->p.ipv6);
	return XDP_TX;
}

/* --- ACK: syncache_expand --------------------------------------------------
 * An entry decides first, then the cookie; either way what the handshake
 * negotiated becomes one set of request-socket attributes. */

/* What a handshake negotiated: from a syncache entry or from a cookie. */
struct sg_negotiated {
	u16 mss; /* the client's */
	u8 sack, ecn, ts;
	u8 wscale_ok, snd_wscale, rcv_wscale;
};

/* In monitor mode the kernel answers SYNs: the ACK that completes such a
 * handshake (its request socket found) counts as one completed with us
 * would, so that what monitor mode says the limit would do is what enforce
 * mode, which gets these ACKs, does. */
static __always_inline void monitor_handshake(struct sg_ctx *c, int state)
{
	u32 zero = 0;

	if (state != SG_TCP_NEW_SYN_RECV || !monitoring(c))
		return;
	c->s = scratch.lookup(&zero);
	if (!c->s)
		return;
	flow_from_pkt(&c->p, 0, &c->flow);
	c->now = bpf_ktime_get_ns();
	handshake_done(c);
}

/* Ours to judge: a listener and nothing else for the 4-tuple. Leaves the
 * flow (ISN = seq - 1) in c->flow and c->key; the options are parsed later,
 * only for ACKs that get that far. */
static __always_inline int ack_validate(struct sg_ctx *c)
{
	u32 zero = 0;
	int state = sock_state(c);

	if (state != SG_TCP_LISTEN) {
		monitor_handshake(c, state);
		return leave_to_kernel(state, c->p.ipv6);
	}
	c->s = scratch.lookup(&zero);
	if (!c->s)
		return XDP_PASS;
	c->key = &c->s->key;
	flow_from_pkt(&c->p, bpf_ntohl(c->p.tcp->seq) - 1, &c->flow);
	tuple_key(&c->flow, c->key);
	return SG_CONTINUE;
}

/* The entry for the 4-tuple, if any, taken out first (as the seed does) and
 * then checked: ACK = ISS + 1, SEQ = IRS + 1, timestamps iff negotiated and
 * TSecr = what we sent. 1 when it matched (n filled); 0 when there was none
 * or it did not match (badack), and the cookie decides. */
static __always_inline int syncache_expand(struct sg_ctx *c,
					   struct sg_negotiated *n)
{
	struct sg_tcpopts *o = &c->s->o;
	struct sg_syncache_state *st;
	struct sg_syncache_entry *e;
	/* What the checks need, copied before the entry goes (its memory is
	 * reused at once); not the whole entry: the stack is nearly full. */
	struct {
		u32 iss, irs, ts;
		u16 peer_mss, bucket;
		u8 flags, snd_wscale, rcv_wscale;
	} ent;
	u32 zero = 0, has_ts;

	/* entries goes up before an insert and down after a delete, so it is
	 * 0 only while the map holds none: an ACK is then spared hashing its
	 * 48-byte key (about 15% of a bogus ACK's cost). */
	st = syncache_state.lookup(&zero);
	if (st && !st->entries)
		return 0;
	e = syncache.lookup(c->key);
	if (!e)
		return 0;
	ent.iss = e->iss;
	ent.irs = e->irs;
	ent.ts = e->ts;
	ent.peer_mss = e->peer_mss;
	ent.bucket = e->bucket;
	ent.flags = e->flags;
	ent.snd_wscale = e->snd_wscale;
	ent.rcv_wscale = e->rcv_wscale;
	syncache_drop(c->key, ent.bucket);
	parse_tcp_options(c->xdp, c->p.tcp, c->p.l4_off, o);
	has_ts = !!(o->flags & SG_HAS_TS);
	if (bpf_ntohl(c->p.tcp->ack_seq) - 1 != ent.iss ||
	    bpf_ntohl(c->p.tcp->seq) - 1 != ent.irs ||
	    has_ts != !!(ent.flags & SG_SCF_TIMESTAMP) ||
	    (has_ts && bpf_ntohl(o->tsecr) != ent.ts)) {
		count(SG_C_badack, c->p.ipv6);
		return 0;
	}
	n->mss = ent.peer_mss < sg_mss_value(0, c->p.ipv6)
			 ? sg_mss_value(0, c->p.ipv6)
			 : ent.peer_mss;
	n->sack = !!(ent.flags & SG_SCF_SACK);
	n->ecn = !!(ent.flags & SG_SCF_ECN);
	n->ts = has_ts;
	n->wscale_ok = !!(ent.flags & SG_SCF_WINSCALE);
	n->snd_wscale = ent.snd_wscale;
	n->rcv_wscale = ent.rcv_wscale;
	return 1;
}

#ifdef SG_KERNEL_COOKIES
/* The kernel's check of the cookie in ack - 1 (kcookie.h). */
static __always_inline int cookie_valid(struct sg_ctx *c)
{
	return c->sk && kc_check_cookie(c->xdp, &c->p, c->sk) == 0;
}

/* The kernel decodes the options itself, from the cookie and the TSecr. */
static __always_inline void cookie_negotiated(struct sg_ctx *c,
					      struct sg_negotiated *n)
{
}
#else
/* The cookie in ack - 1, checked against the key its slot bit names: the
 * current one or the previous one (a key older than that has been
 * overwritten, so its cookies fail). In fleet mode the other parity may
 * also be the next epoch's key (a host whose clock runs ahead minted it): a
 * second hash, for those only. */
static __always_inline int cookie_valid(struct sg_ctx *c)
{
	const struct sg_secrets *sec = c->sec;
	u32 cookie = bpf_ntohl(c->p.tcp->ack_seq) - 1;
	u8 meta = cookie & 0xff;
	u64 h;

	h = sg_cookie_hash(&sec->keys[SG_META_SLOT(meta)], &c->flow, meta);
	if (cookie >> 8 != (u32)(h & 0xffffff) && sec->fleet &&
	    SG_META_SLOT(meta) != (sec->active & 1))
		h = sg_cookie_hash(&sec->ahead, &c->flow, meta);
	return cookie >> 8 == (u32)(h & 0xffffff);
}

/* What a valid cookie and the ACK's options say was negotiated. */
static __always_inline void cookie_negotiated(struct sg_ctx *c,
					      struct sg_negotiated *n)
{
	struct sg_tcpopts *o = &c->s->o;
	u8 meta = (bpf_ntohl(c->p.tcp->ack_seq) - 1) & 0xff;
	u8 ws_idx = SG_META_WS(meta);

	/* Timestamps were negotiated iff the ACK carries them (we echo the
	 * option whenever the client offers it and the sysctl allows). */
	parse_tcp_options(c->xdp, c->p.tcp, c->p.l4_off, o);
	n->mss = sg_mss_value(SG_META_MSS(meta), c->p.ipv6);
	n->sack = SG_META_SACK(meta);
	n->ts = !!(o->flags & c->cfg->flags & SG_HAS_TS);
	n->ecn = n->ts && (bpf_ntohl(o->tsecr) & 1) &&
		 (c->cfg->flags & SG_CF_ECN);
	n->wscale_ok = ws_idx != 0;
	n->snd_wscale = sg_wscale_value(ws_idx);
	n->rcv_wscale = c->cfg->wscale;
}
#endif

/* A segment no socket, entry or cookie accounts for (a connection this
 * host forgot, or a forged ACK): an RST as Linux would send it, within the
 * budgets, else dropped, so that a client is told at once and an ACK flood
 * still dies here. While draining it may be the kernel's (its own cookie):
 * the kernel judges it. */
static __always_inline int unknown_segment(struct sg_ctx *c)
{
	__be32 ack_seq = c->p.tcp->ack_seq;

	if (draining(c)) {
		count(SG_C_drained, c->p.ipv6);
		return XDP_PASS;
	}
	count(SG_C_badcookie, c->p.ipv6);
	if (!c->cfg->rst_interval_ns)
		return enforce(c, XDP_DROP);
	if (!reset_allowed(c)) {
		count(SG_C_rstlimited, c->p.ipv6);
		return enforce(c, XDP_DROP);
	}
	if (handed_off_lately(c)) {
		count(SG_C_rstheld, c->p.ipv6);
		return enforce(c, XDP_DROP);
	}
	count(SG_C_rstsent, c->p.ipv6);
	if (monitoring(c))
		return XDP_PASS;
	if (write_reset(c->xdp, c->p.l3_off, c->p.frame_len, &c->flow,
			c->cfg->ttl, ack_seq))
		return XDP_DROP; /* -1 left the frame, -2 cannot happen */
	return XDP_TX;
}

/* An ACK without an entry: its cookie decides. SG_CONTINUE with n filled,
 * or the verdict. */
static __always_inline int cookie_check(struct sg_ctx *c,
					struct sg_negotiated *n)
{
	if (!c->cfg->syncookies) /* no entry and no cookies: rejected */
		return unknown_segment(c);
	if (!cookie_valid(c)) {
		/* Only segments with data or FIN can trail a hand-off; a bogus
		 * pure ACK costs no map lookup. */
		if ((c->p.l4_len > c->p.tcp->doff * 4 || c->p.tcp->fin) &&
		    handed_off_recently(c)) {
			count(SG_C_coalesced, c->p.ipv6);
			return XDP_PASS;
		}
		return unknown_segment(c);
	}
	cookie_negotiated(c, n);
	return SG_CONTINUE;
}

/* Put h on record for c's 4-tuple: 1 when it is, -1 when the map refused
 * it, 0 when c is a segment right behind a hand-off of the same handshake
 * (handed_off_recently), which goes up plain. One insert on the common
 * path, a 4-tuple with nothing on record: the lookup (about 100 ns) is
 * paid only where there is a record, a reused port or a segment behind the
 * ACK. */
static __always_inline int record_handoff(struct sg_ctx *c,
					  struct sg_handoff *h)
{
	int err = handoffs.insert(c->key, h);

	if (err != -EEXIST)
		return err ? -1 : 1;
	if (in_window(c, handoffs.lookup(c->key)))
		return 0;
	return handoffs.update(c->key, h) ? -1 : 1;
}

/* Leave the request socket's attributes for tc (tc_handoff.c) in the
 * handoffs map, and pass the ACK on. (Kernel cookies: tc only makes the
 * conntrack entry, and the kernel the socket.) */
static __always_inline int hand_off(struct sg_ctx *c,
				    const struct sg_negotiated *n, u32 counter)
{
	struct sg_handoff h = {};
	int recorded;

	c->now = bpf_ktime_get_ns();
	h.at_ns = c->now;
	h.isn = bpf_ntohl(c->p.tcp->seq) - 1;
	h.iss = bpf_ntohl(c->p.tcp->ack_seq) - 1;
	h.pending = 1;
#ifndef SG_KERNEL_COOKIES
	h.attrs.mss = n->mss;
	h.attrs.sack_ok = n->sack;
	h.attrs.ecn_ok = n->ecn;
	if (n->wscale_ok) {
		h.attrs.wscale_ok = 1;
		h.attrs.snd_wscale = n->snd_wscale;
		h.attrs.rcv_wscale = n->rcv_wscale;
	}
	if (n->ts) {
		h.attrs.tstamp_ok = 1;
		h.attrs.rcv_tsval = bpf_ntohl(c->s->o.tsval);
		h.attrs.rcv_tsecr = bpf_ntohl(c->s->o.tsecr);
	}
#endif
	recorded = record_handoff(c, &h);
	if (!recorded) {
		count(SG_C_coalesced, c->p.ipv6);
		return XDP_PASS;
	}
	handshake_done(c);
	count(counter, c->p.ipv6);
#ifndef SG_KERNEL_COOKIES
	/* No room: the kernel will send an RST. (With the kernel's cookies
	 * the kernel decodes the attributes from the cookie; a failed record
	 * costs only the coalescing window and, behind a firewall, the
	 * conntrack entry, not the connection.) */
	if (recorded < 0)
		count(SG_C_aborted, c->p.ipv6);
#endif
	return XDP_PASS;
}

static __always_inline int handle_ack(struct sg_ctx *c)
{
	struct sg_negotiated n = {};
	int r = ack_validate(c);

	if (r != SG_CONTINUE)
		return r;
	if (syncache_expand(c, &n))
		return hand_off(c, &n, SG_C_expanded);
	r = cookie_check(c, &n);
	if (r != SG_CONTINUE)
		return r;
	return hand_off(c, &n, SG_C_recvcookie);
}

/* --- RST: syncache_chkrst ------------------------------------------------- */

static __always_inline int handle_rst(struct sg_ctx *c, u8 flags)
{
	struct sg_syncache_entry *e;
	struct sg_flow key;
	int state = sock_state(c);

	if (state != SG_TCP_LISTEN)
		return leave_to_kernel(state, c->p.ipv6);
	tuple_key_of(&c->p, &key);
	e = syncache.lookup(&key);
	/* Any RST to our SYN-ACK must not carry ACK, SYN or FIN (RFC 793
	 * p. 65); a valid one has SEQ in [IRS, IRS + WND] (RFC 793 p. 37).
	 * Either way the kernel's listener ignores it after us. */
	if (!(flags & (SG_TH_ACK | SG_TH_SYN | SG_TH_FIN)) && e &&
	    bpf_ntohl(c->p.tcp->seq) - e->irs <= e->wnd &&
	    !syncache_drop(&key, e->bucket)) {
		count(SG_C_reset, c->p.ipv6);
		return XDP_PASS;
	}
	count(SG_C_badrst, c->p.ipv6);
	return XDP_PASS;
}

/* --- ICMP: syncache_unreach ----------------------------------------------- */

/* After an unreachable the seed retransmits without DF (the path's MTU may
 * be what failed): clear it in the stored IPv4 SYN-ACK. */
static __always_inline void syncache_clear_df(struct sg_syncache_entry *e)
{
	u32 off = e->l3_off;
	u16 old, new, check;

	if (off > 22) /* as written by syncache_keep_frame; bounds it */
		return;
	__builtin_memcpy(&old, &e->frame[off + 6], 2);
	__builtin_memcpy(&check, &e->frame[off + 10], 2);
	new = old & ~bpf_htons(SG_IP_DF);
	check = sg_csum_replace(check, old, new);
	__builtin_memcpy(&e->frame[off + 6], &new, 2);
	__builtin_memcpy(&e->frame[off + 10], &check, 2);
}

static __always_inline void handle_icmp(struct xdp_md *ctx, struct sg_pkt *p,
					const struct sg_config *cfg)
{
	struct sg_syncache_entry *e;
	struct sg_flow key = {};
	u32 seq, *protected, port32;
	u16 port;

	if (parse_icmp_unreach(ctx, p, &key, &seq, &port))
		return;
	port32 = port;
	protected = listeners.lookup(&port32);
	if (!protected || *protected != SG_PORT_PROTECTED)
		return;
	e = syncache.lookup(&key);
	/* Not about our SYN-ACK (SEQ != ISS): bogus. */
	if (!e || seq != e->iss)
		return;
	/* Remove the entry only on a second error after the retransmissions
	 * ran out, so that a short outage does not kill it (the seed). */
	if (!(e->flags & SG_SCF_UNREACH) || e->rxmits < cfg->rexmtlimit) {
		if (!(e->flags & SG_SCF_UNREACH) && !key.ipv6)
			syncache_clear_df(e);
		e->flags |= SG_SCF_UNREACH;
		return;
	}
	if (!syncache_drop(&key, e->bucket))
		count(SG_C_unreach, key.ipv6);
}

/* A SYN or ACK found behind IPv6 extension headers, or a SYN in a first
 * fragment: judged as any other (what it is stays in the counters
 * above). Its reply is Linux's: a plain IPv6 or IPv4 header and TCP
 * (reply.h writes from l3_off; the headers and the rest of the frame are
 * not echoed). A valid ACK behind extension headers is handed off like
 * any: tc finds its TCP header with the same parse, and the kernel, after
 * the extension headers, finds the request socket on the skb. */
static __always_inline void count_ext(const struct sg_pkt *p)
{
	if (p->ext)
		count(SG_C_exthdr, p->ipv6);
	if (p->frag)
		count(SG_C_fragment, p->ipv6);
}

int synguard_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sg_ctx c; /* not zeroed: 200 bytes of stores on every frame; each
			  * step sets what it reads (see flow_from_pkt) */
	u32 zero = 0, port, *protected;
	u8 flags;
	int r;

	c.xdp = ctx;
#ifdef SG_KERNEL_COOKIES
	c.sk = NULL;
#endif
	__builtin_memset(&c.p, 0, sizeof(c.p));
	count(SG_C_packets, 0);
	c.cfg = config.lookup(&zero);
	if (!c.cfg)
		goto pass;
	r = parse_pkt(ctx, data, data_end, &c.p, c.cfg->ext_opts,
		      c.cfg->ext_len8);
	if (r == SG_PARSE_MALFORMED) {
		count(SG_C_malformed, 0);
		return XDP_PASS;
	}
	if (r == SG_PARSE_ICMP) {
		handle_icmp(ctx, &c.p, c.cfg);
		goto pass;
	}
	if (r != SG_PARSE_TCP)
		goto pass;

	port = bpf_ntohs(c.p.tcp->dest);
	protected = listeners.lookup(&port);
	if (!protected || *protected != SG_PORT_PROTECTED)
		goto pass;
#ifndef SG_KERNEL_COOKIES
	c.sec = secrets.lookup(&zero);
	if (!c.sec)
		goto pass;
#endif

	flags = ((u8 *)c.p.tcp)[13];
	if ((flags & (SG_TH_SYN | SG_TH_ACK | SG_TH_RST | SG_TH_FIN)) ==
	    SG_TH_SYN) {
		count_ext(&c.p);
		return release_listener(&c, handle_syn(&c));
	}
	/* Only a SYN is answered from a first fragment: an ACK's hand-off
	 * would give the fragment, not the segment, its request socket. */
	if (c.p.frag)
		goto pass;
	if (flags & SG_TH_RST)
		return release_listener(&c, handle_rst(&c, flags));
	if ((flags & (SG_TH_SYN | SG_TH_ACK)) == SG_TH_ACK) {
		count_ext(&c.p);
		return release_listener(&c, handle_ack(&c));
	}
pass:
	count(SG_C_passed, 0);
	return XDP_PASS;
}
