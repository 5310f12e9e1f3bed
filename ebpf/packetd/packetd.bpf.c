// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// packetd's XDP program: STAMP Session-Reflector (RFC 8762, unauthenticated, stateless, with the
// RFC 8972 SSID) and UDP echo, answered with XDP_TX; everything else is XDP_PASS.
//
// Built by daemons/packetd/build.rs with clang for the bpf target; loaded by
// daemons/packetd/src/xdp.rs (same stem). Userspace must fill the `packetd_cfg` map before the
// program answers anything: with both ports 0 (the map's initial state) every packet passes.
//
// Wire rules (mirrored byte for byte by daemons/packetd/src/wire.rs for the userspace fallback):
//  * STAMP (UDP payload >= 44 bytes to the STAMP port): the reply is the request with the first
//    44 payload bytes replaced by the reflector test packet (RFC 8762 §4.3.1 with the RFC 8972
//    SSID at offset 14); bytes after 44 (padding, TLVs) are left as received, so the reply is
//    exactly as long as the request. Stateless: Sequence Number = the sender's. The clock is
//    read once per STAMP packet, once its headers are checked, and that time is both the
//    Receive Timestamp and the Timestamp (the rewrite takes well under a microsecond, a clock
//    read is the largest share of the per-packet cost, docs/benchmarks.md, and the frame leaves later anyway,
//    when the driver flushes its XDP_TX queue); NTP format from bpf_ktime_get_tai_ns() plus the
//    TAI->UTC offset userspace keeps in the map. The Error
//    Estimate is the one userspace computes from the kernel clock (adjtimex), with S set only when
//    the kernel says the clock is synchronised. Ses-Sender TTL = received TTL / hop limit.
//  * Echo (UDP to the echo port): the payload is returned unchanged.
//  * Replies swap MAC, IP addresses and UDP ports and leave with TTL / hop limit 255 (STAMP) or 64
//    (echo). The UDP checksum is updated incrementally over the rewritten words (the pseudo
//    header and UDP header sums do not change under a swap); an IPv4 UDP checksum of 0 stays 0.
//  * Source allowlist: a packet to a served port whose source address is not in the LPM tries
//    `packetd_allow4` / `packetd_allow6` (filled by userspace from [xdp] allow-sources, or from
//    the on-link prefixes of the attached interfaces) is not answered: XDP_PASS, counted as
//    denied. An empty trie answers nobody.
//  * Per-source rate bound: with max_pps_per_source > 0, each source address (LRU map
//    `packetd_rate`) is answered at most that many times per one-second window; the excess is
//    XDP_PASS'ed and counted as rate_limited. The window count is approximate across CPUs.
//  * Never answered (XDP_PASS, counted as passed): not IPv4/IPv6, IPv4 with options or
//    fragments, IPv6 extension headers, source port equal to the destination port (two
//    reflectors would ping-pong), multicast/broadcast destinations.
//  * Malformed (counted, XDP_PASS): truncated headers, UDP length not matching the IP length,
//    STAMP payload shorter than 44 bytes, IPv6 UDP checksum 0.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define STAMP_LEN 44
#define NTP_EPOCH_OFFSET 2208988800ULL
#define NSEC_PER_SEC 1000000000ULL
#define STAMP_TTL 255
#define ECHO_TTL 64

enum counter {
	C_REFLECTED = 0,
	C_ECHOED = 1,
	C_MALFORMED = 2,
	C_PASSED = 3,
	C_DENIED = 4,
	C_RATE_LIMITED = 5,
	C_MAX = 6,
};

// Written by userspace (daemons/packetd/src/xdp.rs, `XdpConfig`): keep the layouts identical.
struct packetd_cfg {
	__s64 utc_minus_tai_ns; // CLOCK_REALTIME - CLOCK_TAI, refreshed by userspace
	__u16 error_estimate;   // RFC 8762 §4.2.1 Error Estimate, host order
	__u16 stamp_port;       // host order; 0 = STAMP off
	__u16 echo_port;        // host order; 0 = echo off
	__u16 _pad;
	__u32 max_pps_per_source; // 0 = no per-source bound
	__u32 allow_generation;   // bumped by userspace after a prefix leaves the allowlist
};

struct lpm4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

#define ALLOW_MAX 1024

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ALLOW_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm4_key);
	__type(value, __u8);
} packetd_allow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ALLOW_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm6_key);
	__type(value, __u8);
} packetd_allow6 SEC(".maps");

// Per-source window: IPv4 sources are keyed as IPv4-mapped IPv6 addresses.
// The last source each CPU found in the allowlist, valid while allow_generation is unchanged:
// a steady stream from one sender skips the LPM lookup (a measurable share of the per-packet
// cost). Only removals bump the generation; an addition cannot disallow a cached source.
struct allow_cache {
	__u32 generation;
	__u32 valid;
	struct in6_addr addr; // IPv4 as ::ffff:a.b.c.d
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct allow_cache);
} packetd_allow_cache SEC(".maps");

struct rate_val {
	__u64 window_start_ns;
	__u64 count;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct in6_addr);
	__type(value, struct rate_val);
} packetd_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct packetd_cfg);
} packetd_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} packetd_counters SEC(".maps");

static __always_inline int count(__u32 c, int verdict)
{
	__u64 *v = bpf_map_lookup_elem(&packetd_counters, &c);
	if (v)
		*v += 1;
	return verdict;
}

static __always_inline __u16 csum_fold(__u64 csum)
{
	// Four folds: enough for any sum below 2^48.
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

static __always_inline __u64 utc_now(const struct packetd_cfg *cfg)
{
	return bpf_ktime_get_tai_ns() + (__u64)cfg->utc_minus_tai_ns;
}

// Swaps the MAC addresses as 16-bit words (a memcpy of the byte arrays is 24 byte accesses).
static __always_inline void swap_eth(struct ethhdr *eth)
{
	__u16 *m = (__u16 *)eth;
	__u16 d0 = m[0], d1 = m[1], d2 = m[2];
	m[0] = m[3];
	m[1] = m[4];
	m[2] = m[5];
	m[3] = d0;
	m[4] = d1;
	m[5] = d2;
}

static __always_inline void swap_ports(struct udphdr *udp)
{
	__u16 tmp = udp->source;
	udp->source = udp->dest;
	udp->dest = tmp;
}

static __always_inline void ipv4_csum(struct iphdr *ip)
{
	__u64 sum = 0;
	__u16 *w = (__u16 *)ip;
	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	ip->check = csum_fold(sum);
}

// One 32-bit word of the packet, viewed as halves and bytes (layout independent of the host's
// byte order: the checksum arithmetic below works on words as they lie in memory).
union word {
	__u32 w;
	__u16 h[2];
	__u8 b[4];
};

// The STAMP payload as 32-bit words. The payload sits 2 bytes off a 4-byte boundary (after
// 14 + 20 + 8 or 14 + 40 + 8 bytes of headers); the verifier accepts unaligned packet access
// where the CPU handles it well (x86-64, arm64), and whole-word loads and stores cost a fraction
// of the byte-by-byte copies clang emits for a memcpy of unknown alignment.
struct stamp_payload {
	__u32 w[STAMP_LEN / 4];
};

// NTP 64-bit timestamp of utc_ns as two network-order words (seconds, fraction). The one
// 64-bit division costs 1-2 ns here (docs/benchmarks.md), not worth a per-CPU cache.
static __always_inline void ntp_words(__u64 utc_ns, __u32 *secs_be, __u32 *frac_be)
{
	__u64 s = utc_ns / NSEC_PER_SEC;
	__u64 rem = utc_ns - s * NSEC_PER_SEC;
	// rem * 2^32 / 10^9 without a second division: rem * round(2^63 / 10^9) >> 31 (rem < 10^9,
	// so the product fits in 64 bits; at most 1 unit of 2^-32 s below the exact quotient).
	*secs_be = bpf_htonl((__u32)(s + NTP_EPOCH_OFFSET));
	*frac_be = bpf_htonl((__u32)((rem * 9223372037ULL) >> 31));
}

// Rewrites the STAMP payload in place and updates udp->check; returns 0, or -1 if malformed.
// Word i of the payload holds bytes 4i..4i+3; word 0 (Sequence Number, stateless: the
// sender's) and bytes 14-15 (SSID, RFC 8972) keep their place.
static __always_inline int reflect_stamp(struct udphdr *udp, void *data_end, __u8 ttl,
					 __u64 rx_ns, const struct packetd_cfg *cfg)
{
	struct stamp_payload *p = (void *)(udp + 1);
	if ((void *)(p + 1) > data_end)
		return -1;
	__u32 o[STAMP_LEN / 4];
#pragma unroll
	for (int i = 0; i < STAMP_LEN / 4; i++)
		o[i] = p->w[i];
	__u32 secs, frac;
	ntp_words(rx_ns, &secs, &frac);
	union word w3 = {.w = o[3]}, w9 = {.w = o[3]}, w10 = {.w = 0};
	w3.h[0] = bpf_htons(cfg->error_estimate); // Error Estimate; SSID (bytes 14-15) stays
	w9.h[1] = 0;                              // Session-Sender Error Estimate; MBZ
	w10.b[0] = ttl;                           // Ses-Sender TTL; MBZ
	__u32 n[STAMP_LEN / 4] = {
		o[0],          // Sequence Number
		secs, frac,    // Timestamp: the same reading as the Receive Timestamp
		w3.w,          // Error Estimate, SSID
		secs, frac,    // Receive Timestamp
		o[0],          // Session-Sender Sequence Number
		o[1], o[2],    // Session-Sender Timestamp
		w9.w,          // Session-Sender Error Estimate, MBZ
		w10.w,         // Ses-Sender TTL, MBZ
	};
	if (udp->check) {
		// RFC 1624 incremental update over 32-bit words, inline (cheaper than the
		// bpf_csum_diff helper): ~check + sum(new) - sum(old), where -x is ~x because
		// 2^32 - 1 is a multiple of 2^16 - 1. Word 0 does not change.
		__u64 sum = (__u16)~udp->check;
#pragma unroll
		for (int i = 1; i < STAMP_LEN / 4; i++)
			sum += (__u64)n[i] + (__u32)~o[i];
		__u16 c = csum_fold(sum);
		udp->check = c ? c : 0xffff;
	}
#pragma unroll
	for (int i = 1; i < STAMP_LEN / 4; i++)
		p->w[i] = n[i];
	return 0;
}

// The source address as an IPv6 address (IPv4 mapped to ::ffff:a.b.c.d), word by word.
static __always_inline void map_v4(struct in6_addr *a, __u32 saddr)
{
	a->in6_u.u6_addr32[0] = 0;
	a->in6_u.u6_addr32[1] = 0;
	a->in6_u.u6_addr32[2] = bpf_htonl(0xffff);
	a->in6_u.u6_addr32[3] = saddr;
}

static __always_inline int lpm_allowed(const struct in6_addr *src, int is_v6)
{
	if (is_v6) {
		struct lpm6_key k = {.prefixlen = 128};
		__builtin_memcpy(k.addr, src, 16);
		return bpf_map_lookup_elem(&packetd_allow6, &k) != 0;
	}
	struct lpm4_key k = {.prefixlen = 32};
	__builtin_memcpy(k.addr, &src->in6_u.u6_addr32[3], 4);
	return bpf_map_lookup_elem(&packetd_allow4, &k) != 0;
}

static __always_inline int source_allowed(const struct in6_addr *src, int is_v6,
					  const struct packetd_cfg *cfg)
{
	// Read before the trie: userspace updates the trie first and then bumps the generation,
	// so a cache entry stored with this generation never outlives a removal it did not see.
	__u32 gen = cfg->allow_generation;
	__u32 zero = 0;
	struct allow_cache *c = bpf_map_lookup_elem(&packetd_allow_cache, &zero);
	if (c && c->valid && c->generation == gen &&
	    c->addr.in6_u.u6_addr32[3] == src->in6_u.u6_addr32[3] &&
	    c->addr.in6_u.u6_addr32[2] == src->in6_u.u6_addr32[2] &&
	    c->addr.in6_u.u6_addr32[1] == src->in6_u.u6_addr32[1] &&
	    c->addr.in6_u.u6_addr32[0] == src->in6_u.u6_addr32[0])
		return 1;
	if (!lpm_allowed(src, is_v6))
		return 0;
	if (c) {
		c->generation = gen;
		c->valid = 1;
		c->addr = *src;
	}
	return 1;
}

// 1 when the source is still within its per-second budget (and charges it), else 0.
static __always_inline int source_within_rate(const struct in6_addr *src, __u64 now_ns,
					      __u32 limit)
{
	struct rate_val *v = bpf_map_lookup_elem(&packetd_rate, src);
	if (!v) {
		struct rate_val init = {.window_start_ns = now_ns, .count = 1};
		bpf_map_update_elem(&packetd_rate, src, &init, BPF_ANY);
		return 1;
	}
	if (now_ns - v->window_start_ns >= NSEC_PER_SEC) {
		v->window_start_ns = now_ns;
		v->count = 1;
		return 1;
	}
	if (v->count >= limit)
		return 0;
	__sync_fetch_and_add(&v->count, 1);
	return 1;
}

#define R_DENIED 3
#define R_RATE_LIMITED 4

static __always_inline int handle_udp(struct udphdr *udp, void *data_end, __u16 ip_payload_len,
				      __u8 ttl, const struct packetd_cfg *cfg,
				      int is_v6, const struct in6_addr *src)
{
	if ((void *)(udp + 1) > data_end)
		return -1;
	__u16 dport = bpf_ntohs(udp->dest);
	int stamp = cfg->stamp_port && dport == cfg->stamp_port;
	int echo = cfg->echo_port && dport == cfg->echo_port;
	if (!stamp && !echo)
		return 0;
	// The receive time, read only when the packet needs it (a clock read is a measurable
	// share of the per-packet cost): STAMP's timestamps, the per-source rate window.
	__u64 rx_ns = (stamp || cfg->max_pps_per_source) ? utc_now(cfg) : 0;
	if (udp->source == udp->dest)
		return 0;
	__u16 ulen = bpf_ntohs(udp->len);
	if (ulen != ip_payload_len || ulen < sizeof(*udp))
		return -1;
	if (is_v6 && udp->check == 0)
		return -1;
	if (stamp && ulen - sizeof(*udp) < STAMP_LEN)
		return -1;
	if (!source_allowed(src, is_v6, cfg))
		return R_DENIED;
	if (cfg->max_pps_per_source &&
	    !source_within_rate(src, rx_ns, cfg->max_pps_per_source))
		return R_RATE_LIMITED;
	if (stamp) {
		if (reflect_stamp(udp, data_end, ttl, rx_ns, cfg))
			return -1;
		swap_ports(udp);
		return 1;
	}
	swap_ports(udp);
	return 2;
}

SEC("xdp")
int packetd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct packetd_cfg *cfg = bpf_map_lookup_elem(&packetd_cfg, &zero);
	if (!cfg)
		return count(C_PASSED, XDP_PASS);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return count(C_PASSED, XDP_PASS);
	if (eth->h_dest[0] & 1)
		return count(C_PASSED, XDP_PASS);
	int r;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return count(C_PASSED, XDP_PASS);
		if (ip->protocol != IPPROTO_UDP || ip->ihl != 5 ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			return count(C_PASSED, XDP_PASS);
		__u32 daddr = ip->daddr;
		if (daddr == 0xffffffff || (bpf_ntohl(daddr) >> 28) == 0xe)
			return count(C_PASSED, XDP_PASS);
		__u16 tot = bpf_ntohs(ip->tot_len);
		if (tot < sizeof(*ip))
			return count(C_MALFORMED, XDP_PASS);
		struct in6_addr src;
		map_v4(&src, ip->saddr);
		r = handle_udp((void *)(ip + 1), data_end, tot - sizeof(*ip), ip->ttl, cfg, 0,
			       &src);
		if (r < 0)
			return count(C_MALFORMED, XDP_PASS);
		if (r == R_DENIED)
			return count(C_DENIED, XDP_PASS);
		if (r == R_RATE_LIMITED)
			return count(C_RATE_LIMITED, XDP_PASS);
		if (r == 0)
			return count(C_PASSED, XDP_PASS);
		ip->daddr = ip->saddr;
		ip->saddr = daddr;
		ip->ttl = r == 1 ? STAMP_TTL : ECHO_TTL;
		ipv4_csum(ip);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return count(C_PASSED, XDP_PASS);
		if (ip6->nexthdr != IPPROTO_UDP || ip6->daddr.in6_u.u6_addr8[0] == 0xff)
			return count(C_PASSED, XDP_PASS);
		struct in6_addr src;
		src.in6_u.u6_addr32[0] = ip6->saddr.in6_u.u6_addr32[0];
		src.in6_u.u6_addr32[1] = ip6->saddr.in6_u.u6_addr32[1];
		src.in6_u.u6_addr32[2] = ip6->saddr.in6_u.u6_addr32[2];
		src.in6_u.u6_addr32[3] = ip6->saddr.in6_u.u6_addr32[3];
		r = handle_udp((void *)(ip6 + 1), data_end, bpf_ntohs(ip6->payload_len),
			       ip6->hop_limit, cfg, 1, &src);
		if (r < 0)
			return count(C_MALFORMED, XDP_PASS);
		if (r == R_DENIED)
			return count(C_DENIED, XDP_PASS);
		if (r == R_RATE_LIMITED)
			return count(C_RATE_LIMITED, XDP_PASS);
		if (r == 0)
			return count(C_PASSED, XDP_PASS);
		struct in6_addr tmp = ip6->daddr;
		ip6->daddr = ip6->saddr;
		ip6->saddr = tmp;
		ip6->hop_limit = r == 1 ? STAMP_TTL : ECHO_TTL;
	} else {
		return count(C_PASSED, XDP_PASS);
	}
	swap_eth(eth);
	return count(r == 1 ? C_REFLECTED : C_ECHOED, XDP_TX);
}

char _license[] SEC("license") = "Dual BSD/GPL";
