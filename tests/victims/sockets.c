/* Victim: holds a TCP listening socket (unsupported by dump yet) and spins in pause(). */
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[128];
	int out = open(argc > 1 ? argv[1] : "/dev/stdout", O_WRONLY | O_CREAT | O_APPEND, 0644);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	bind(s, (struct sockaddr *)&a, sizeof(a));
	listen(s, 1);
	snprintf(buf, sizeof(buf), "ready pid=%d sock=%d\n", getpid(), s);
	write(out, buf, strlen(buf));
	for (;;)
		pause();
}
