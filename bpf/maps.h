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
 * up to packets; each recvcookie ends as completed, aborted or raced. */
#define SG_COUNTERS(X)                                                         \
	X(packets)     /* frames seen by XDP */                                \
	X(passed)      /* left to the kernel untouched */                      \
	X(malformed)   /* header lengths that do not fit the frame; passed */  \
	X(sendcookie)  /* SYN answered with a cookie SYN-ACK (XDP_TX) */       \
	X(recvcookie)  /* ACK with a valid cookie, sent on to the hand-off */  \
	X(badcookie)   /* ACK to a listener with an invalid cookie; dropped */ \
	X(established) /* ACK/SYN for a 4-tuple the kernel already has */      \
	X(nolistener)  /* SYN/ACK to a protected port with no listener */      \
	X(unsupported) /* the driver refused adjust_tail/adjust_meta; passed */ \
	X(coalesced)   /* segment of a handshake handed off <10 ms ago; passed */ \
	X(completed)   /* tc: request socket assigned, kernel takes over */    \
	X(aborted)     /* tc: bpf_sk_assign_tcp_reqsk failed; kernel sends RST */ \
	X(raced)       /* tc: the kernel had the socket by then; passed */

enum sg_counter {
#define SG_ENUM(name) SG_C_##name,
	SG_COUNTERS(SG_ENUM)
#undef SG_ENUM
	SG_C_MAX
};

/* Fixed size so that adding a counter never changes a pinned map's shape. */
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
 * `current` in a second update, so a reader never sees a half-written key
 * in the slot it mints with. */
struct sg_secrets {
	u32 active;  /* slot SYN cookies are minted with */
	u32 pad;
	u64 rotated_ns;  /* CLOCK_MONOTONIC of the last flip (controller only) */
	u64 rotations;   /* flips since the map was created (controller only) */
	struct sg_key keys[2];
};

/* Option switches in sg_config.flags: the data path only offers what the
 * kernel's sysctls let the hand-off accept (bpf_sk_assign_tcp_reqsk checks
 * net.ipv4.tcp_window_scaling/sack/timestamps). Same bits as the SG_HAS_*
 * option flags in parse.h, so "offered & allowed" is one AND. */
#define SG_CF_WSCALE     0x02
#define SG_CF_SACK       0x04
#define SG_CF_TIMESTAMPS 0x08

struct sg_config {
	u16 mss4;      /* our MSS for IPv4 (interface MTU - 40) */
	u16 mss6;      /* our MSS for IPv6 (interface MTU - 60) */
	u16 window;    /* window in our SYN-ACK (never scaled, RFC 7323) */
	u8 wscale;     /* our receive window scale, offered when the peer's SYN has one */
	u8 flags;      /* SG_CF_* */
	u8 ttl;        /* IPv4 TTL / IPv6 hop limit of our SYN-ACKs */
	u8 pad[7];
};

/* listeners[port] != 0: the port (host order) is protected. An array keyed
 * by port is one bounds check and one load, cheaper than a hash. */
#define SG_LISTENER_SLOTS 65536

BPF_TABLE_PINNED("array", u32, struct sg_secrets, secrets, 1,
		 SG_PIN_DIR "/secrets");
BPF_TABLE_PINNED("array", u32, struct sg_config, config, 1,
		 SG_PIN_DIR "/config");
BPF_TABLE_PINNED("array", u32, u32, listeners, SG_LISTENER_SLOTS,
		 SG_PIN_DIR "/listeners");
BPF_TABLE_PINNED("percpu_array", u32, u64, counters, SG_COUNTER_SLOTS,
		 SG_PIN_DIR "/counters");

/* What XDP hands to the tc program in the metadata area in front of a
 * validated ACK (bpf_xdp_adjust_meta). The kernel limits metadata to 32
 * bytes; this is 24. */
#define SG_HANDOFF_MAGIC 0x53594e47 /* "SYNG" */

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

struct sg_handoff {
	u32 magic;
	struct sg_tcp_req_attrs attrs;
};

#endif /* SG_MAPS_H */
