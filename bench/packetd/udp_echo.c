// The userspace baseline of bench/packetd.sh: a UDP echo that answers every datagram to its
// sender, in batches of up to 64 with recvmmsg(2) and sendmmsg(2) on one blocking socket
// (SO_REUSEPORT: the bench runs one instance per CPU).
//   udp_echo ADDRESS PORT SECONDS   (IPv4; exits after SECONDS, printing datagrams echoed)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define SIZE 2048

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: udp_echo ADDRESS PORT SECONDS\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	// Several instances share the port (one per CPU), as a multi-threaded server would.
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
	    inet_pton(AF_INET, argv[1], &a.sin_addr) != 1 ||
	    bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		perror("udp_echo: socket/bind");
		return 1;
	}
	// Wake up at least every 100 ms to check the deadline.
	struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	static char bufs[BATCH][SIZE];
	struct iovec iov[BATCH];
	struct sockaddr_in from[BATCH];
	struct mmsghdr msgs[BATCH];
	time_t end = time(NULL) + atoi(argv[3]);
	unsigned long long echoed = 0;
	while (time(NULL) < end) {
		for (int i = 0; i < BATCH; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = SIZE;
			memset(&msgs[i], 0, sizeof msgs[i]);
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &from[i];
			msgs[i].msg_hdr.msg_namelen = sizeof from[i];
		}
		int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
		if (n <= 0)
			continue;
		for (int i = 0; i < n; i++)
			iov[i].iov_len = msgs[i].msg_len;
		int s = sendmmsg(fd, msgs, n, 0);
		if (s > 0)
			echoed += s;
	}
	printf("%llu\n", echoed);
	return 0;
}
