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
//    exactly as long as the request. Stateless: Sequence Number = the sender's. Receive Timestamp
//    is read first thing, Timestamp just before the rewrite; both in NTP format from
//    bpf_ktime_get_tai_ns() plus the TAI->UTC offset userspace keeps in the map. The Error
//    Estimate is the one userspace computes from the kernel clock (adjtimex), with S set only when
//    the kernel says the clock is synchronised. Ses-Sender TTL = received TTL / hop limit.
//  * Echo (UDP to the echo port): the payload is returned unchanged.
//  * Replies swap MAC, IP addresses and UDP ports and leave with TTL / hop limit 255 (STAMP) or 64
//    (echo). The UDP checksum is updated incrementally over the rewritten words (the pseudo
//    header and UDP header sums do not change under a swap); an IPv4 UDP checksum of 0 stays 0.
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
	C_MAX = 4,
};

// Written by userspace (daemons/packetd/src/xdp.rs, `XdpConfig`): keep the layouts identical.
struct packetd_cfg {
	__s64 utc_minus_tai_ns; // CLOCK_REALTIME - CLOCK_TAI, refreshed by userspace
	__u16 error_estimate;   // RFC 8762 §4.2.1 Error Estimate, host order
	__u16 stamp_port;       // host order; 0 = STAMP off
	__u16 echo_port;        // host order; 0 = echo off
	__u16 _pad;
};

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
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

// NTP 64-bit timestamp, network order, into 8 bytes at p.
static __always_inline void put_ntp(__u8 *p, __u64 utc_ns)
{
	__u32 secs = (__u32)(utc_ns / NSEC_PER_SEC + NTP_EPOCH_OFFSET);
	__u32 frac = (__u32)(((utc_ns % NSEC_PER_SEC) << 32) / NSEC_PER_SEC);
	secs = bpf_htonl(secs);
	frac = bpf_htonl(frac);
	__builtin_memcpy(p, &secs, 4);
	__builtin_memcpy(p + 4, &frac, 4);
}

static __always_inline __u64 utc_now(const struct packetd_cfg *cfg)
{
	return bpf_ktime_get_tai_ns() + (__u64)cfg->utc_minus_tai_ns;
}

static __always_inline void swap_eth(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
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

union stamp_words {
	__u8 b[STAMP_LEN];
	__u32 w[STAMP_LEN / 4];
};

// Rewrites the STAMP payload in place and updates udp->check; returns 0, or -1 if malformed.
static __always_inline int reflect_stamp(struct udphdr *udp, void *data_end, __u8 ttl,
					 __u64 rx_ns, const struct packetd_cfg *cfg)
{
	__u8 *pl = (__u8 *)(udp + 1);
	if ((void *)(pl + STAMP_LEN) > data_end)
		return -1;
	union stamp_words old, new;
	__builtin_memcpy(old.b, pl, STAMP_LEN);
	__builtin_memset(new.b, 0, STAMP_LEN);
	__builtin_memcpy(new.b + 0, old.b + 0, 4);    // Sequence Number (stateless: the sender's)
	__u16 err = bpf_htons(cfg->error_estimate);
	__builtin_memcpy(new.b + 12, &err, 2);        // Error Estimate
	__builtin_memcpy(new.b + 14, old.b + 14, 2);  // SSID (RFC 8972)
	put_ntp(new.b + 16, rx_ns);                   // Receive Timestamp
	__builtin_memcpy(new.b + 24, old.b + 0, 4);   // Session-Sender Sequence Number
	__builtin_memcpy(new.b + 28, old.b + 4, 8);   // Session-Sender Timestamp
	__builtin_memcpy(new.b + 36, old.b + 12, 2);  // Session-Sender Error Estimate
	new.b[40] = ttl;                              // Ses-Sender TTL
	put_ntp(new.b + 4, utc_now(cfg));             // Timestamp (transmit), read last
	if (udp->check) {
		__s64 d = bpf_csum_diff(old.w, STAMP_LEN, new.w, STAMP_LEN,
					(__u32)(__u16)~udp->check);
		__u16 c = csum_fold((__u64)(__u32)d);
		udp->check = c ? c : 0xffff;
	}
	__builtin_memcpy(pl, new.b, STAMP_LEN);
	return 0;
}

static __always_inline int handle_udp(struct udphdr *udp, void *data_end, __u16 ip_payload_len,
				      __u8 ttl, __u64 rx_ns, const struct packetd_cfg *cfg,
				      int is_v6)
{
	if ((void *)(udp + 1) > data_end)
		return -1;
	__u16 dport = bpf_ntohs(udp->dest);
	int stamp = cfg->stamp_port && dport == cfg->stamp_port;
	int echo = cfg->echo_port && dport == cfg->echo_port;
	if (!stamp && !echo)
		return 0;
	if (udp->source == udp->dest)
		return 0;
	__u16 ulen = bpf_ntohs(udp->len);
	if (ulen != ip_payload_len || ulen < sizeof(*udp))
		return -1;
	if (is_v6 && udp->check == 0)
		return -1;
	if (stamp) {
		if (ulen - sizeof(*udp) < STAMP_LEN)
			return -1;
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
	__u64 rx_ns_tai = bpf_ktime_get_tai_ns();
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct packetd_cfg *cfg = bpf_map_lookup_elem(&packetd_cfg, &zero);
	if (!cfg)
		return count(C_PASSED, XDP_PASS);
	__u64 rx_ns = rx_ns_tai + (__u64)cfg->utc_minus_tai_ns;

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
		r = handle_udp((void *)(ip + 1), data_end, tot - sizeof(*ip), ip->ttl, rx_ns, cfg, 0);
		if (r < 0)
			return count(C_MALFORMED, XDP_PASS);
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
		r = handle_udp((void *)(ip6 + 1), data_end, bpf_ntohs(ip6->payload_len),
			       ip6->hop_limit, rx_ns, cfg, 1);
		if (r < 0)
			return count(C_MALFORMED, XDP_PASS);
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
