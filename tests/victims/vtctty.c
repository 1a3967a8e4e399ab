/*
 * A virtual console as a session's controlling terminal, and the console: device nodes made in
 * DIR (4:7 and 5:1), opened (the first without O_NOCTTY by a session leader, so it becomes its
 * controlling terminal). argv: OUT DIR. On SIGTERM the descriptors must be the same devices and
 * the controlling terminal the same. Prints "SKIP" where this machine has no virtual console.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static long tty_nr(void)
{
	char buf[1024];
	int fd = open("/proc/self/stat", O_RDONLY);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	char *p = strrchr(buf, ')');
	long v;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %ld", &v) != 1)
		return -1;
	return v;
}

int main(int argc, char **argv)
{
	char vtp[512], conp[512], msg[256];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	setsid();
	snprintf(vtp, sizeof(vtp), "%s/vt7", argv[2]);
	snprintf(conp, sizeof(conp), "%s/console", argv[2]);
	if (mknod(vtp, S_IFCHR | 0600, makedev(4, 7)) || mknod(conp, S_IFCHR | 0600, makedev(5, 1)))
		return 2;
	int vt = open(vtp, O_RDWR);
	int con = open(conp, O_RDONLY | O_NOCTTY);
	if (vt < 0 || con < 0 || tty_nr() != (long)makedev(4, 7)) {
		snprintf(msg, sizeof(msg), "ready pid=%d\nSKIP vtctty\n", getpid());
		write(out, msg, strlen(msg));
		return 0;
	}
	struct stat a, b;
	fstat(vt, &a);
	fstat(con, &b);
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();
	struct stat a2, b2;
	const char *why = NULL;
	if (fstat(vt, &a2) || a2.st_rdev != a.st_rdev || a2.st_ino != a.st_ino)
		why = "the virtual console changed";
	else if (fstat(con, &b2) || b2.st_rdev != b.st_rdev || b2.st_ino != b.st_ino)
		why = "the console changed";
	else if (tty_nr() != (long)makedev(4, 7))
		why = "the controlling terminal changed";
	else if (getsid(0) != getpid())
		why = "no longer a session leader";
	snprintf(msg, sizeof(msg), why ? "FAIL vtctty: %s\n" : "PASS vtctty\n", why);
	write(out, msg, strlen(msg));
	return 0;
}
