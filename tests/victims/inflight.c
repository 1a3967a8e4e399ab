/*
 * Descriptors in flight: a pipe's read end (data in the pipe) and a file (at an offset) sent
 * with SCM_RIGHTS into a socketpair and not received yet, then closed by the sender; a second
 * message carries the same pipe end again. argv: OUT DIR. On SIGTERM the messages are received
 * and the descriptors checked: the pipe's data, the file's offset and contents, one pipe.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static void send_fds(int via, const char *text, int *fds, int n)
{
	char buf[CMSG_SPACE(sizeof(int) * 4)] = {0};
	struct iovec iov = {(void *)text, strlen(text)};
	struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf,
			   .msg_controllen = CMSG_SPACE(sizeof(int) * n)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&h);
	c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS, c->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	sendmsg(via, &h, 0);
}

static int recv_fds(int via, char *text, int *fds)
{
	char buf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = {text, 63};
	struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof(buf)};
	ssize_t len = recvmsg(via, &h, 0);
	if (len < 0)
		return -1;
	text[len] = 0;
	struct cmsghdr *c = CMSG_FIRSTHDR(&h);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return 0;
	int n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	memcpy(fds, CMSG_DATA(c), sizeof(int) * n);
	return n;
}

int main(int argc, char **argv)
{
	char buf[256], path[200];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int sk[2], p[2];
	socketpair(AF_UNIX, SOCK_DGRAM, 0, sk);
	pipe(p);
	write(p[1], "through the pipe", 16);
	snprintf(path, sizeof(path), "%s/data.txt", argv[2]);
	int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	write(f, "0123456789", 10);
	lseek(f, 4, SEEK_SET);
	int two[2] = {p[0], f};
	send_fds(sk[0], "first", two, 2);
	send_fds(sk[0], "second", &p[0], 1);
	close(p[0]);
	close(f);
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
	write(out, buf, strlen(buf));
	while (!term)
		pause();

	const char *why = NULL;
	char text[64], got[32] = {0};
	struct stat pst;
	fstat(p[1], &pst); /* the task's own end of the pipe (a new inode after a restore) */
	int fds[4], again[4];
	struct stat st;
	if (recv_fds(sk[1], text, fds) != 2 || strcmp(text, "first"))
		why = "first message";
	else if (recv_fds(sk[1], text, again) != 1 || strcmp(text, "second"))
		why = "second message";
	else if (fstat(fds[0], &st) || st.st_ino != pst.st_ino)
		why = "the pipe in flight is not the task's pipe";
	else if (read(fds[0], got, 16) != 16 || strcmp(got, "through the pipe"))
		why = "pipe data";
	else if (lseek(fds[1], 0, SEEK_CUR) != 4 || read(fds[1], got, 6) != 6 || memcmp(got, "456789", 6))
		why = "file offset or contents";
	else if (fstat(again[0], &st) || st.st_ino != pst.st_ino)
		why = "the second message's pipe";
	snprintf(buf, sizeof(buf), why ? "FAIL inflight: %s\n" : "PASS inflight\n", why);
	write(out, buf, strlen(buf));
	return why != NULL;
}
