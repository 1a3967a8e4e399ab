/* Victim: holds a packet socket (not supported by dump) and spins in pause(). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[128];
	int out = open(argc > 1 ? argv[1] : "/dev/stdout", O_WRONLY | O_CREAT | O_APPEND, 0644);
	int s = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_ALL));
	snprintf(buf, sizeof(buf), "ready pid=%d sock=%d\n", getpid(), s);
	if (s < 0 || write(out, buf, strlen(buf)) < 0)
		return 1;
	for (;;)
		pause();
}
