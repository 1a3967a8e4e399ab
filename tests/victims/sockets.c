/* Victim: holds a netlink socket (not supported by dump) and spins in pause(). */
#include <fcntl.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[128];
	int out = open(argc > 1 ? argv[1] : "/dev/stdout", O_WRONLY | O_CREAT | O_APPEND, 0644);
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	struct sockaddr_nl a = {.nl_family = AF_NETLINK};
	bind(s, (struct sockaddr *)&a, sizeof(a));
	snprintf(buf, sizeof(buf), "ready pid=%d sock=%d\n", getpid(), s);
	if (write(out, buf, strlen(buf)) < 0)
		return 1;
	for (;;)
		pause();
}
