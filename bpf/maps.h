/* SPDX-License-Identifier: GPL-2.0-only */
/* Map layouts shared by the XDP and tc programs and read by the controller.
 *
 * Every map is pinned under SG_PIN_DIR (/sys/fs/bpf/synguard/<ifname>), which
 * the loader passes with -D, so the two programs share them and a second
 * process (synguard status) can read them without compiling anything.
 * controller/layout.py mirrors these structs with ctypes; keep them in step.
 *
 * bcc rewrites map calls (map.lookup()) only in the main source file, not in
 * headers: code that touches a map lives in the .c files.
 */
#ifndef SG_MAPS_H
#define SG_MAPS_H

#ifndef SG_PIN_DIR
#error "SG_PIN_DIR must be defined by the loader"
#endif

/* Counters, one slot each in a per-CPU array. Names follow the seed's
 * tcps_sc_* counters where the seed has one. The controller parses this
 * list (one X(name) and its help comment per line): the order is defined
 * here only.
 * Each XDP frame lands in exactly one of passed .. coalesced, so they add
 * up to packets; added .. unreach say more about some of those frames
 * (each badcookie is one of rstsent, rstlimited, rstheld, or none of them
 * when RSTs are off); each recvcookie or expanded ends as completed, aborted or raced;
 * the last four are the syncache timer's (retransmitted counted by the
 * controller once it sent them, the others by synguard_syncache_timer). */
/* One counter and its help per line: layout.py reads them. */
/* clang-format off */
#define SG_COUNTERS(X)                                                         \
	X(packets)     /* frames seen by XDP */                                \
	X(passed)      /* left to the kernel untouched */                      \
	X(malformed)   /* header lengths that do not fit the frame; passed */  \
	X(sendcookie)  /* SYN answered with a cookie SYN-ACK (XDP_TX) */       \
	X(dupsyn)      /* SYN for a syncache entry, answered from it again */  \
	X(dropped)     /* SYN left unanswered: no entry possible, syncookies 0 */ \
	X(ratelimited) /* SYN dropped: its source prefix had its SYN-ACKs */   \
	X(recvcookie)  /* ACK with a valid cookie, sent on to the hand-off */  \
	X(expanded)    /* ACK matching a syncache entry, sent on to the hand-off */ \
	X(badcookie)   /* ACK to a listener, no entry, invalid cookie: RST or dropped */ \
	X(established) /* SYN/ACK/RST for a 4-tuple the kernel already has */  \
	X(nolistener)  /* SYN/ACK/RST to a protected port with no listener */  \
	X(reset)       /* RST in the window of an entry: entry removed */      \
	X(badrst)      /* RST with ACK/SYN/FIN, no entry or out of window */   \
	X(unsupported) /* SYN the driver could not resize into our SYN-ACK; passed */ \
	X(signed)      /* SYN with TCP-MD5 or TCP-AO (XDP cannot sign); passed */ \
	X(mptcp)       /* SYN/ACK/RST to an MPTCP listener (the hand-off refuses it); passed */ \
	X(nocookie)    /* kernel cookies: SYN the kernel would mint none for (accept queue full); passed */ \
	X(drained)     /* SYN, or ACK nobody knows, while draining: left to the kernel */ \
	X(coalesced)   /* segment of a handshake handed off <10 ms ago; passed */ \
	X(added)       /* syncache entry made for a SYN */                     \
	X(exthdr)      /* SYN or ACK behind IPv6 extension headers, judged */  \
	X(fragment)    /* SYN in a first fragment, judged (the rest: kernel) */ \
	X(verified)    /* SYN or RST beyond its prefix's budget, sent: the source had completed a handshake */ \
	X(rstsent)     /* badcookie answered with an RST (within the RST budgets) */ \
	X(rstlimited)  /* badcookie dropped: beyond the RST budgets */         \
	X(rstheld)     /* badcookie dropped, not reset: its handshake was handed off <3 s ago */ \
	X(bucketoverflow) /* SYN not cached: its bucket was at bucketlimit */  \
	X(zonefail)    /* SYN not cached: cache at cachelimit or map full */   \
	X(badack)      /* ACK that did not match its entry: entry removed */   \
	X(unreach)     /* ICMP unreachable for an entry: entry removed */      \
	X(completed)   /* tc: request socket assigned, kernel takes over */    \
	X(aborted)     /* tc: bpf_sk_assign_tcp_reqsk failed; kernel sends RST */ \
	X(raced)       /* tc: the kernel had the socket by then; passed */     \
	X(ctinserted)  /* tc: conntrack entry made for a completed hand-off */ \
	X(ctfailed)    /* tc: no conntrack entry (table full, entry exists) */ \
	X(retransmitted) /* timer: SYN-ACK sent again for an entry */          \
	X(rexmtlimited) /* timer: retransmission skipped, its prefix's budget spent */ \
	X(stale)       /* timer: entry removed after rexmtlimit resends */     \
	X(flushed)     /* timer: entry removed while paused (cookies carry it) */
/* clang-format on */

enum sg_counter {
#define SG_ENUM(name) SG_C_##name,
	SG_COUNTERS(SG_ENUM)
#undef SG_ENUM
};

/* Fixed size so that adding a counter never changes a pinned map's shape.
 * Slots [0, 64) count IPv4 (and packets, passed and malformed, which have
 * no family), slots [64, 128) IPv6. */
#define SG_COUNTER_SLOTS 64

/* One 128-bit SipHash key. */
struct sg_key {
	u64 k0;
	u64 k1;
};

/* Two key slots (odd/even, as the seed's sch_secbits_odd/even). The data
 * path mints cookies with keys[active] and accepts keys[0] and keys[1]:
 * the idle slot holds the previous key until the next rotation overwrites
 * it. The controller writes the new key into the idle slot first and flips
 * `active` in a second update, so a reader never sees a half-written key
 * in the slot it mints with.
 *
 * Fleet mode (controller/fleet.py): keys come from a master key shared by
 * hosts behind one address, one key per wall-clock epoch, keys[e & 1] for
 * epoch e. For the parity that is not active a host also accepts `ahead`,
 * the next epoch's key, so cookies from hosts whose clocks run up to one
 * period ahead or behind validate. */
struct sg_secrets {
	u32 active;	/* slot SYN cookies are minted with */
	u32 fleet;	/* 1: also try `ahead` for the other parity */
	u64 rotated_ns; /* CLOCK_MONOTONIC of the last flip (controller only) */
	u64 rotations;	/* flips since the map was created (controller only) */
	struct sg_key keys[2];
	struct sg_key ahead;
};

/* Option switches in sg_config.flags: the data path only offers what the
 * kernel's sysctls let the hand-off accept (bpf_sk_assign_tcp_reqsk checks
 * net.ipv4.tcp_window_scaling/sack/timestamps; the kernel's own SYN-ACK
 * offers ECN when net.ipv4.tcp_ecn is not 0). WSCALE, SACK and TIMESTAMPS
 * have the bits of the SG_HAS_* option flags in parse.h, so "offered &
 * allowed" is one AND. */
#define SG_CF_WSCALE	 0x02
#define SG_CF_SACK	 0x04
#define SG_CF_TIMESTAMPS 0x08
#define SG_CF_ECN	 0x10
/* Not an option: tc makes the conntrack entry of each connection it hands
 * off (a firewall here needs it; controller/firewall.py decides). */
#define SG_CF_CONNTRACK 0x20
/* Monitor mode: every frame is judged and counted as in enforce mode, and
 * passed to the kernel untouched (nothing sent, dropped or cached). */
#define SG_CF_MONITOR 0x40
/* Draining (stop, detach): SYNs and segments nobody knows go to the kernel
 * again; ACKs of cookies and entries already issued are still handed off. */
#define SG_CF_DRAIN 0x80

struct sg_config {
	u16 mss4;   /* our MSS for IPv4 (interface MTU - 40) */
	u16 mss6;   /* our MSS for IPv6 (interface MTU - 60) */
	u16 window; /* window in our SYN-ACK (never scaled, RFC 7323) */
	u8 wscale; /* our receive window scale, offered when the peer's SYN has one */
	u8 flags; /* SG_CF_* */
	u8 ttl;	  /* IPv4 TTL / IPv6 hop limit of our SYN-ACKs */
	/* The seed's sysctls (net.inet.tcp.syncookies, .syncookies_only,
	 * .syncache.cachelimit, .bucketlimit, .rexmtlimit). */
	u8 syncookies;	    /* 0: no cookies; a SYN without room is dropped */
	u8 syncookies_only; /* with syncookies: keep no syncache entries */
	u8 rexmtlimit;	 /* SYN-ACK retransmissions before an entry is stale */
	u32 cachelimit;	 /* entries in the whole syncache */
	u32 bucketlimit; /* entries per bucket (SG_SYNCACHE_BUCKETS of them) */
	u32 rexmt_ms; /* first retransmission after rexmt_ms, then x2, x4, x8 */
	u32 pause_ms; /* first pause after an overflow; doubles, capped */
	/* SYN-ACKs to one source prefix (the reflection limit): the rate and
	 * burst as set, the GCRA parameters the data path uses (the controller
	 * derives them), the prefix lengths and the hash seed. */
	u32 synack_rate; /* per second; 0: no limit */
	u32 synack_burst;
	u8 prefix4; /* IPv4 source prefix length, 0..32 */
	u8 prefix6; /* IPv6 source prefix length, 0..128 */
	/* What Linux takes in an IPv6 options header (parse.h: parse_ext):
	 * unknown "skip" options, and the header's length in 8-byte units
	 * (a header of hdrlen + 1 units is ours if hdrlen < ext_len8), from
	 * net.ipv6.max_{hbh,dst}_opts_{number,length}. */
	u8 ext_opts;
	u8 ext_len8;
	u64 synack_interval_ns; /* 1 s / synack_rate */
	u64 synack_tau_ns;	/* synack_burst * synack_interval_ns */
	u64 prefix_seed; /* random per attach: buckets cannot be aimed at */
	/* RSTs for segments nobody knows (no socket, entry or valid cookie):
	 * the rate for all CPUs as set (0: none, drop them), and each CPU's
	 * GCRA share of it (the controller derives it). They also spend the
	 * source prefix's reply budget above. */
	u32 rst_rate;
	u32 verified_s;	     /* as set: see verified_ns */
	u64 rst_interval_ns; /* per CPU: possible CPUs / rst_rate */
	u64 rst_tau_ns;	     /* one second's worth, per CPU */
	/* A source that completed a handshake with us skips its prefix's
	 * budget for this long after its last one (0: never). */
	u64 verified_ns;
};

/* One source address, the key of the verified map: IPv6 as it is, IPv4
 * mapped (::ffff:a.b.c.d), which never appears on the wire. */
struct sg_addr {
	u64 w[2];
};

/* The reflection limit (ratelimit.h): one GCRA "theoretical arrival
 * time" per bucket of source prefixes. Every reply synguard sends (SYN-ACK,
 * retransmission, RST) spends its prefix's budget; a completed handshake
 * gives its SYN-ACK back. Not pinned: a new data path starts afresh. */
#define SG_RATELIMIT_BUCKETS 65536
BPF_ARRAY(reply_tat, u64, SG_RATELIMIT_BUCKETS);

/* bcc < 0.20 only opens pins that exist, and by map id, which needs
 * CAP_SYS_ADMIN: with it the loader (controller/datapath.py) asks for plain
 * maps and pins them itself. */
#ifdef SG_COMPAT_PINS
#undef BPF_TABLE_PINNED
#define BPF_TABLE_PINNED(_type, _key, _leaf, _name, _max, _pinned) \
	BPF_TABLE(_type, _key, _leaf, _name, _max)
#endif

/* Sources that completed a handshake with us (XDP wrote them at the
 * hand-off): a flood spoofed from their prefix, or from their very
 * address, must not lock them out, since they have proved they receive
 * what we send. Inserted once per source and lifetime, never per SYN, so a
 * random-source flood churns nothing; keyed by the kernel's seeded hash,
 * so nobody can aim at a client's slot. Value: CLOCK_MONOTONIC of the
 * last completed handshake. */
#define SG_VERIFIED_MAX 65536
BPF_TABLE_PINNED("lru_hash", struct sg_addr, u64, verified, SG_VERIFIED_MAX,
		 SG_PIN_DIR "/verified");

/* The sources of the latest SYNs the reflection limit dropped, per CPU,
 * for the controller's log line about the heaviest prefixes: written at
 * n % SG_LIMITED_SAMPLES, n counting up. */
#define SG_LIMITED_SAMPLES 64
struct sg_limited {
	u64 n;
	struct sg_addr src[SG_LIMITED_SAMPLES];
};
BPF_TABLE_PINNED("percpu_array", u32, struct sg_limited, limited, 1,
		 SG_PIN_DIR "/limited");

/* listeners[port] == SG_PORT_PROTECTED: the port (host order) is
 * protected. An array keyed by port is one bounds check and one load,
 * cheaper than a hash. */
#define SG_LISTENER_SLOTS 65536
#define SG_PORT_PROTECTED 1

BPF_TABLE_PINNED("array", u32, struct sg_secrets, secrets, 1,
		 SG_PIN_DIR "/secrets");
BPF_TABLE_PINNED("array", u32, struct sg_config, config, 1,
		 SG_PIN_DIR "/config");
BPF_TABLE_PINNED("array", u32, u32, listeners, SG_LISTENER_SLOTS,
		 SG_PIN_DIR "/listeners");
BPF_TABLE_PINNED("percpu_array", u32, u64, counters, 2 * SG_COUNTER_SLOTS,
		 SG_PIN_DIR "/counters");

/* A connection attempt as the client sent it: the cookie's input (seq =
 * the client's ISN) and, with the seq half zeroed, the 4-tuple that keys
 * the syncache. No padding: it is a map key. */
struct sg_flow {
	u64 w[5]; /* addresses (1 word for v4, 4 for v6), then ports | seq */
	u64 ipv6;
};

/* The syncache: half-open connections by 4-tuple (struct sg_flow with the
 * seq half zeroed), as the seed's struct syncache. The ISS is always a
 * cookie, so an entry that is missing only costs fidelity. Preallocated
 * (about 17 MB at the default 65536 entries): removing 100k entries from
 * the timer took 30 ms in the program against 95-127 ms without, since a
 * preallocated element goes back to a free list; a failed insert (map
 * full) is the seed's zone allocation failure. */
/* The map's size, a ceiling for cachelimit, fixed when the map is made
 * (the loader passes it). The kernel gives a hash map that many buckets:
 * a SYN touches one at random, so it is kept no larger than needed. */
#ifndef SG_SYNCACHE_MAX
#define SG_SYNCACHE_MAX 65536
#endif
#define SG_SYNCACHE_BUCKETS 512 /* the seed's TCP_SYNCACHE_HASHSIZE */

/* sc_flags, with the seed's values; ECN came to FreeBSD later (as 0x100,
 * which a u8 cannot hold). */
#define SG_SCF_WINSCALE	 0x02
#define SG_SCF_TIMESTAMP 0x04
#define SG_SCF_UNREACH	 0x10
#define SG_SCF_ECN	 0x40
#define SG_SCF_SACK	 0x80

/* The longest SYN-ACK we send: Ethernet and two VLAN tags (22), IPv6 (40),
 * TCP (20) with MSS, SACK-permitted, timestamps and window scale (20). */
#define SG_SYNACK_MAX 104

struct sg_syncache_entry {
	u64 added_ns;  /* CLOCK_MONOTONIC when the SYN came */
	u64 rxt_ns;    /* next SYN-ACK retransmission due */
	u32 irs;       /* client's ISN (sc_irs) */
	u32 iss;       /* our ISS, a cookie (sc_iss) */
	u32 ts;	       /* our TSval (sc_ts) */
	u32 ts_recent; /* client's TSval to echo (sc_tsreflect) */
	u32 flowlabel; /* IPv6 flow label of our SYN-ACK */
	u16 peer_mss;  /* the client's MSS, exact (default if it sent none) */
	u16 mss;       /* the MSS our SYN-ACK advertised */
	u16 wnd;       /* the window our SYN-ACK advertised (sc_wnd) */
	u16 bucket;    /* which bucketlimit slice holds it */
	u8 snd_wscale; /* the client's shift (sc_requested_s_scale) */
	u8 rcv_wscale; /* ours (sc_requested_r_scale) */
	u8 flags;      /* SG_SCF_* */
	u8 rxmits;     /* retransmissions so far */
	u8 ttl;	       /* TTL / hop limit of our SYN-ACK */
	u8 l3_off;     /* where the IP header starts in frame */
	u8 frame_len;  /* bytes of frame in use */
	u8 pad[4];     /* frame 8-aligned: copied in words */
	/* The SYN-ACK as XDP sent it, L2 header included: retransmissions
	 * send these bytes as they are. */
	u8 frame[SG_SYNACK_MAX];
};

/* Entry counts, changed only with atomics and only by BPF (the controller
 * removes entries through synguard_syncache_timer), plus the pause state. */
struct sg_syncache_state {
	u64 entries;
	u64 pause_until_ns; /* cookies only until then (0: never paused) */
	u64 pauses;	    /* pauses since attach */
	u32 backoff;	    /* current pause = pause_ms << backoff */
	u32 pad;
};

/* No flags argument (bcc < 0.24 has none): flags 0, preallocated. */
BPF_TABLE_PINNED("hash", struct sg_flow, struct sg_syncache_entry, syncache,
		 SG_SYNCACHE_MAX, SG_PIN_DIR "/syncache");
BPF_TABLE_PINNED("array", u32, struct sg_syncache_state, syncache_state, 1,
		 SG_PIN_DIR "/syncache_state");
BPF_TABLE_PINNED("array", u32, u32, syncache_buckets, SG_SYNCACHE_BUCKETS,
		 SG_PIN_DIR "/syncache_buckets");

/* The syncache timer's output (syncache_timer.c): the SYN-ACKs due in one
 * run, read by the controller, which sends them. */
/* keys per run: the request and 64 keys (3104 bytes) fit what a test run
 * takes for a tc frame (a page less headroom and tailroom, about 3.7 kB). */
#define SG_TIMER_BATCH 64
struct sg_rexmt {
	u8 ipv6;
	u8 len;
	u8 pad[6]; /* frame 8-aligned, as in the entry: copied in words */
	u8 frame[SG_SYNACK_MAX];
};
BPF_TABLE_PINNED("array", u32, struct sg_rexmt, rexmt, SG_TIMER_BATCH,
		 SG_PIN_DIR "/rexmt");

struct sg_tcp_req_attrs { /* struct bpf_tcp_req_attrs, Linux >= 6.9 */
	u32 rcv_tsval;
	u32 rcv_tsecr;
	u16 mss;
	u8 rcv_wscale;
	u8 snd_wscale;
	u8 ecn_ok;
	u8 wscale_ok;
	u8 sack_ok;
	u8 tstamp_ok;
	u8 usec_ts_ok;
	u8 reserved[3];
};

/* Hand-offs, by 4-tuple (struct sg_flow with the seq half zeroed): XDP
 * writes one for each ACK it validated, the tc program finds it for that
 * ACK (seq == isn + 1) and makes the request socket from the attributes.
 * A map and not the XDP metadata area: most cloud NICs' drivers (ENA,
 * gVNIC, hv_netvsc, vmxnet3, ...) never hand that area to tc. Not a per-CPU
 * slot either: a NAPI poll runs XDP over a whole batch before tc sees the
 * first frame, and RPS may run tc on another CPU. The entry stays after
 * use: `at_ns` also tells XDP that the 4-tuple was just handed off (see
 * handed_off_recently in xdp_synguard.c). Only XDP writes entries, and only
 * for ACKs it validated, so a peer cannot forge one. */
struct sg_handoff {
	u64 at_ns;   /* CLOCK_MONOTONIC when XDP validated the ACK */
	u32 isn;     /* the client's ISN: the validated ACK has seq isn + 1 */
	u32 pending; /* 1 until tc has used it */
	struct sg_tcp_req_attrs attrs;
	u32 iss; /* ours (the cookie or the entry's): the validated ACK acks iss + 1 */
};

BPF_TABLE_PINNED("lru_hash", struct sg_flow, struct sg_handoff, handoffs, 65536,
		 SG_PIN_DIR "/handoffs");

#endif /* SG_MAPS_H */
