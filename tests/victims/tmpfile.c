/*
 * A file made with O_TMPFILE in DIR (it never had a name): 5000 bytes, mode 0640, read position
 * 1234. argv: OUT DIR [interop]. On SIGTERM it must have its contents, position, mode, no link,
 * and its status flags (which say O_TMPFILE; "interop" leaves them out: CRIU reopens by name).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char msg[256], data[5000], got[5000];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int interop = argc > 3 && !strcmp(argv[3], "interop");
	for (int i = 0; i < (int)sizeof(data); i++)
		data[i] = 'a' + i % 23;
	int fd = open(argv[2], O_TMPFILE | O_RDWR, 0640);
	if (fd < 0 || write(fd, data, sizeof(data)) != sizeof(data) || lseek(fd, 1234, SEEK_SET) != 1234)
		return 2;
	int flags = fcntl(fd, F_GETFL);
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	struct stat st;
	const char *why = NULL;
	if (lseek(fd, 0, SEEK_CUR) != 1234)
		why = "position";
	else if (pread(fd, got, sizeof(got), 0) != sizeof(got) || memcmp(got, data, sizeof(data)))
		why = "contents";
	else if (fstat(fd, &st) || st.st_nlink != 0 || (st.st_mode & 07777) != 0640)
		why = "links or mode";
	else if (!interop && fcntl(fd, F_GETFL) != flags)
		why = "status flags";
	snprintf(msg, sizeof(msg), why ? "FAIL tmpfile: %s\n" : "PASS tmpfile\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
