/* SPDX-License-Identifier: GPL-2.0-only */
/* The seed's syncache_timer, in the kernel: not attached anywhere, the
 * controller runs it with BPF_PROG_TEST_RUN on a frame that lists syncache
 * keys (it reads them with one batch lookup) and the clock. A tc program,
 * not an XDP one: before Linux 5.15 (at least) each test run of an XDP
 * program switches the XDP dispatcher to it and back, and on 5.10 a timer
 * running every few milliseconds beside a busy XDP path left both CPUs
 * spinning in bpf_dispatcher_xdp_func (soft lockups); and bpf_skb_load_bytes
 * is in every kernel, so the frame is never copied a byte at a time
 * (parse.h's SG_COMPAT_LOAD_BYTES), which made the program too complex for
 * 5.10's verifier. The frame:
 *
 *   struct sg_timer_req | key 0 | key 1 | ... | key n-1   (n <= SG_TIMER_BATCH)
 *
 * For each key it does what the seed's timer does to that entry: while the
 * syncache is paused (and cookies are on) it removes it, since cookies
 * carry those connections (FreeBSD after r178285: "If we have paused
 * processing, unconditionally remove all syncache entries"); an entry due
 * whose retransmissions ran out is removed (stale); one due otherwise is
 * rescheduled (base x 2, x 4, x 8) and its stored SYN-ACK copied to the
 * rexmt map, which the controller sends as it is, if its source prefix's
 * reply budget allows (the reflection limit). So neither a removal nor
 * a retransmission costs a syscall of its own or a SYN-ACK built in Python.
 * The request header comes back with the outcome.
 */

struct sg_timer_req {
	u64 now_ns;  /* in: the clock (CLOCK_MONOTONIC, or a test's) */
	u64 next_ns; /* out: the earliest retransmission still to come */
	u32 keys;    /* in: keys that follow; out: keys done (SG_TIMER_KEYS) */
	u32 rexmt;   /* out: SYN-ACKs in rexmt[0 .. rexmt) */
	u32 removed; /* out: entries removed (counted stale or flushed) */
	u32 pad;
};

static __always_inline void timer_one(struct sg_timer_req *req,
				      const struct sg_config *cfg, u32 paused,
				      struct sg_flow *key)
{
	struct sg_syncache_entry *e = syncache.lookup(key);
	u32 v6 = key->ipv6 ? 1 : 0, slot = req->rexmt;
	struct sg_rexmt *out;
	struct sg_addr src;

	if (!e)
		return; /* expanded, reset or removed since the controller read it */
	if (paused) {
		if (!syncache_drop(key, e->bucket)) {
			count(SG_C_flushed, v6);
			req->removed++;
		}
		return;
	}
	if (e->rxt_ns > req->now_ns)
		goto pending;
	if (e->rxmits >= cfg->rexmtlimit) {
		if (!syncache_drop(key, e->bucket)) {
			count(SG_C_stale, v6);
			req->removed++;
		}
		return;
	}
	/* A retransmission spends its prefix's reply budget as a SYN-ACK
	 * does: it is the only reply synguard sends unasked. Beyond the budget
	 * it is skipped, and the entry ages as if it had gone. */
	flow_source(key, &src);
	if (!reply_budget(cfg, &src, v6, req->now_ns)) {
		count(SG_C_rexmtlimited, v6);
	} else {
		out = rexmt.lookup(&slot);
		if (!out)
			return;
		out->ipv6 = v6;
		out->len = e->frame_len;
		__builtin_memcpy(out->frame, e->frame, sizeof(out->frame));
		req->rexmt++;
	}
	e->rxmits++;
	e->rxt_ns = req->now_ns + ((u64)cfg->rexmt_ms * SG_MS << e->rxmits);
pending:
	if (e->rxt_ns < req->next_ns)
		req->next_ns = e->rxt_ns;
}

/* Keys one run takes. 5.10's verifier refused the program with 64 (E2BIG,
 * too complex), so the kernels before 5.18 (those that lack
 * bpf_xdp_load_bytes: SG_COMPAT_LOAD_BYTES) get fewer; the controller sends
 * the rest again (req.keys says how many were done). */
#ifdef SG_COMPAT_LOAD_BYTES
#define SG_TIMER_KEYS 8
#else
#define SG_TIMER_KEYS SG_TIMER_BATCH
#endif

int synguard_syncache_timer(struct __sk_buff *skb)
{
	u32 zero = 0, paused, done = 0;
	const struct sg_config *cfg = config.lookup(&zero);
	struct sg_syncache_state *st = syncache_state.lookup(&zero);
	struct sg_timer_req req;
	struct sg_flow key;
	u32 off = sizeof(req);

	if (!cfg || !st || bpf_skb_load_bytes(skb, 0, &req, sizeof(req)))
		return TC_ACT_SHOT;
	/* With syncookies=0 the entries are all there is: never flushed. */
	paused = cfg->syncookies && req.now_ns < st->pause_until_ns;
	req.next_ns = ~0ULL;
	req.rexmt = 0;
	req.removed = 0;
	for (int i = 0; i < SG_TIMER_KEYS; i++) {
		if (i >= req.keys)
			break;
		if (bpf_skb_load_bytes(skb, off, &key, sizeof(key)))
			return TC_ACT_SHOT; /* fewer keys than req.keys says */
		timer_one(&req, cfg, paused, &key);
		off += sizeof(key);
		done++;
	}
	req.keys = done;
	if (bpf_skb_store_bytes(skb, 0, &req, sizeof(req), 0))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
