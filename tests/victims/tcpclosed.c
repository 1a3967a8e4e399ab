/*
 * TCP sockets closed after a connection (each side shut its writing, both FINs acknowledged:
 * the client's port left in TIME_WAIT), and one never connected. argv: OUT PORT. On SIGTERM
 * the closed ones must read the end of the stream (0), fail to write, keep their names and
 * their peers' (SO_PEERNAME still answers for a closed socket) with no error waiting; the
 * fresh one must say ENOTCONN.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int port_of(int fd)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);
	return getsockname(fd, (void *)&a, &l) ? -1 : ntohs(a.sin_port);
}

/* The peer's port by SO_PEERNAME, -1 when it has none. */
static int peer_of(int fd)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);
	return getsockopt(fd, SOL_SOCKET, SO_PEERNAME, &a, &l) ? -1 : ntohs(a.sin_port);
}

static int error_of(int fd)
{
	int e = -1;
	socklen_t l = sizeof(e);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
	return e;
}

int main(int argc, char **argv)
{
	char msg[256];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2])),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1;
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
	int fresh = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (void *)&a, sizeof(a)) || listen(l, 1) || connect(c, (void *)&a, sizeof(a)))
		return 2;
	int s = accept(l, NULL, NULL);
	close(l);
	shutdown(c, SHUT_WR);
	usleep(20000);
	shutdown(s, SHUT_WR);
	usleep(50000);
	int cport = port_of(c), sport = port_of(s), cpeer = peer_of(c), speer = peer_of(s);
	signal(SIGTERM, on_term);
	signal(SIGPIPE, SIG_IGN);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	char ch;
	const char *why = NULL;
	if (error_of(s) || error_of(c))
		why = "a closed socket has an error waiting";
	else if (read(s, &ch, 1) != 0 || read(c, &ch, 1) != 0)
		why = "a closed socket does not read the end of the stream";
	else if (write(s, "x", 1) != -1 || write(c, "x", 1) != -1)
		why = "a closed socket writes";
	else if (port_of(c) != cport || port_of(s) != sport)
		why = "a closed socket lost its name";
	else if (cpeer != sport || speer != cport || peer_of(c) != cpeer || peer_of(s) != speer)
		why = "a closed socket lost its peer's name (SO_PEERNAME)";
	else if (read(fresh, &ch, 1) != -1 || errno != ENOTCONN)
		why = "the fresh socket is not unconnected";
	snprintf(msg, sizeof(msg), why ? "FAIL tcpclosed: %s\n" : "PASS tcpclosed\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
