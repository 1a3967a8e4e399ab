/* Victim: maps a packet socket's TPACKET_V3 receive ring (not supported by dump) and spins in pause(). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[128];
	int out = open(argc > 1 ? argv[1] : "/dev/stdout", O_WRONLY | O_CREAT | O_APPEND, 0644);
	int s = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_ALL));
	int v3 = TPACKET_V3;
	struct tpacket_req3 req = {.tp_block_size = 4096, .tp_block_nr = 1, .tp_frame_size = 2048,
				   .tp_frame_nr = 2, .tp_retire_blk_tov = 60};
	if (s < 0 || setsockopt(s, SOL_PACKET, PACKET_VERSION, &v3, sizeof(v3)) ||
	    setsockopt(s, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
		return 1;
	void *ring = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, s, 0);
	if (ring == MAP_FAILED)
		return 1;
	snprintf(buf, sizeof(buf), "ready pid=%d sock=%d ring=%lx\n", getpid(), s, (unsigned long)ring);
	if (write(out, buf, strlen(buf)) < 0)
		return 1;
	for (;;)
		pause();
}
