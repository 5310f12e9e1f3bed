// The baseline XDP programs of bench/packetd.sh (not part of the appliance):
//   xdp_swap  the bare reflector: every IPv4 UDP frame goes back out of the interface it came
//             in on (XDP_TX) with Ethernet and IP addresses and UDP ports swapped. Swapping
//             keeps both checksums valid. No allowlist, no rate bound, no timestamps: the
//             least an XDP reflector can do. The bench also runs it on the far end of the
//             veth, where it bounces every reply back as a new request.
//   xdp_swap_clock  xdp_swap plus one bpf_ktime_get_tai_ns() per frame, the clock read every
//             STAMP reflector needs: what a timestamp alone costs, without the rest of STAMP.
//   xdp_pass  XDP_PASS: lets a veth take XDP_TX frames from its peer (they need NAPI)
//             while the kernel stack handles them (the userspace echo's side).
//   xdp_drop  XDP_DROP: a sink that costs nothing (the generator's side).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Written with each clock reading, so that the compiler keeps the read.
volatile __u64 last_clock;

static __always_inline int swap(struct xdp_md *ctx, int read_clock)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	if (read_clock)
		last_clock = bpf_ktime_get_tai_ns();
	unsigned char mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	__be32 a = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = a;
	__be16 p = udp->source;
	udp->source = udp->dest;
	udp->dest = p;
	return XDP_TX;
}

SEC("xdp")
int xdp_swap(struct xdp_md *ctx)
{
	return swap(ctx, 0);
}

SEC("xdp")
int xdp_swap_clock(struct xdp_md *ctx)
{
	return swap(ctx, 1);
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
