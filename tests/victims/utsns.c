/*
 * A UTS namespace of its own: the task unshares one, names it (host and domain name) and makes
 * a child that stays in it. argv: OUT. On SIGTERM both must still have the names, the child
 * must share the parent's namespace, and that namespace must not be PID 1's. Prints PASS or
 * FAIL.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static const char HOST[] = "deno-criu-uts", DOMAIN[] = "uts.example";

static int named(void)
{
	struct utsname u;
	return !uname(&u) && !strcmp(u.nodename, HOST) && !strcmp(u.domainname, DOMAIN);
}

static ino_t uts_of(const char *pid)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/%s/ns/uts", pid);
	return stat(path, &st) ? 0 : st.st_ino;
}

int main(int argc, char **argv)
{
	(void)argc;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (unshare(CLONE_NEWUTS) || sethostname(HOST, strlen(HOST)) ||
	    setdomainname(DOMAIN, strlen(DOMAIN)))
		return 2;
	int pfd[2];
	pipe(pfd);
	pid_t c = fork();
	if (c == 0) {
		char b;
		read(pfd[0], &b, 1);
		_exit(named() ? 0 : 1);
	}
	signal(SIGTERM, on_term);
	dprintf(out, "ready pid=%d child=%d\n", getpid(), c);
	while (!term)
		pause();
	const char *why = NULL;
	char me[16], kid[16];
	snprintf(me, sizeof(me), "%d", getpid());
	snprintf(kid, sizeof(kid), "%d", c);
	if (!named())
		why = "the names";
	else if (uts_of(me) != uts_of(kid))
		why = "the child is in another namespace";
	else if (uts_of(me) == uts_of("1"))
		why = "back in PID 1's namespace";
	write(pfd[1], "x", 1);
	int st;
	waitpid(c, &st, 0);
	if (!why && (!WIFEXITED(st) || WEXITSTATUS(st)))
		why = "the child's names";
	dprintf(out, why ? "FAIL utsns: %s\n" : "PASS utsns\n", why);
	return 0;
}
