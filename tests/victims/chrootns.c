/*
 * A task in a user namespace of its own whose root is a directory it chrooted into, below a
 * directory only criu's root may enter. Built static; started in that directory (its cwd),
 * which holds it, "marker", "sub/" and "out.log". argv: MARKER.
 *
 * The starter forks a child that starts a session and unshares a user namespace, maps its ids (0..65535 inside are
 * 100000.. outside), and exits once the child is set up. The child becomes uid and gid 0
 * inside, chroots into its working directory (it need not walk there), works in /sub and
 * appends "ready pid=PID" to /out.log. On SIGTERM it checks that its root is still that
 * directory ("/marker" reads MARKER, "/.." is "/"), that it works in /sub, and that it is uid
 * 0 of its namespace; prints PASS chrootns or FAIL.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int read_is(const char *path, const char *text)
{
	char buf[256] = "";
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n == (ssize_t)strlen(text) && !memcmp(buf, text, n);
}

static void write_map(pid_t pid, const char *file, const char *map)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", pid, file);
	int fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, map, strlen(map)) != (ssize_t)strlen(map))
		_exit(4);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	int go[2], done[2];
	char c;
	if (pipe(go) || pipe(done))
		return 3;
	pid_t child = fork();
	if (child == 0) {
		close(go[1]);
		close(done[0]);
		if (setsid() < 0 || unshare(CLONE_NEWUSER) || write(done[1], "u", 1) != 1 ||
		    read(go[0], &c, 1) != 1 || setresgid(0, 0, 0) || setresuid(0, 0, 0) ||
		    chroot(".") || chdir("/sub"))
			_exit(5);
		signal(SIGTERM, on_term);
		int out = open("/out.log", O_WRONLY | O_APPEND);
		if (out < 0)
			_exit(6);
		write(done[1], "r", 1);
		close(done[1]);
		dprintf(out, "ready pid=%d\n", getpid());
		while (!term)
			pause();
		struct stat root, up;
		char cwd[256] = "";
		const char *why = NULL;
		if (!read_is("/marker", argv[1]))
			why = "its root is not the directory it was chrooted into";
		else if (stat("/", &root) || stat("/..", &up) || root.st_ino != up.st_ino)
			why = "its root leads further up";
		else if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, "/sub"))
			why = "its working directory";
		else if (getuid() != 0)
			why = "its uid";
		if (why)
			dprintf(out, "FAIL chrootns: %s\n", why);
		else
			dprintf(out, "PASS chrootns\n");
		_exit(0);
	}
	close(go[0]);
	close(done[1]);
	if (read(done[0], &c, 1) != 1)
		return 7;
	write_map(child, "uid_map", "0 100000 65536\n");
	write_map(child, "gid_map", "0 100000 65536\n");
	if (write(go[1], "g", 1) != 1 || read(done[0], &c, 1) != 1)
		return 8;
	return 0;
}
