/*
 * Victim: state of open files and mappings that a restore must give back exactly.
 *
 *   owner    a pipe with O_ASYNC, F_SETOWN_EX (this process), F_SETSIG SIGUSR2: writing into
 *            it after restore raises SIGUSR2 here
 *   pipe     an empty pipe of 1 MiB (F_SETPIPE_SZ)
 *   ghost    a deleted file with holes (data at 0 and at 1 MiB), mode 0642, owner 1234:4321,
 *            mtime 2001-09-09; open twice through two hard links (both then deleted): a write
 *            through one shows through the other
 *   memfd    mode 0751 (not the default 0777), holding a shell script that execveat() runs
 *   opath    an O_PATH descriptor of a file (no I/O through it, no owner)
 *   vmas     MAP_LOCKED; MADV_DONTFORK, MADV_DONTDUMP, MADV_WIPEONFORK, MADV_SEQUENTIAL; a
 *            shared file mapping made read-only that may become writable again; a private
 *            read-only mapping of a file opened read-only, made writable after restore
 *   times    a file open for reading and writing keeps the modification time it had
 *
 * argv: OUT DIR. Prints "ready pid=P"; on SIGTERM checks it all and writes PASS or FAIL <what>.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utime.h>

#define MTIME 1000000000

static int out, owned[2], big[2], ghost_rw, ghost_ro, mfd, mapfd, opath;
static char opath_name[512];
static volatile int sigusr2;
static char *locked, *advised[4], *fmap, *pmap;
static int timed;
#define OLD_MTIME 1200000000
static const char *failed;

static void say(const char *s) { write(out, s, strlen(s)); }
static void fail(const char *why) { if (!failed) failed = why; }
static void on_usr2(int sig) { (void)sig; sigusr2++; }

/* VmFlags of the mapping at `addr`, from smaps. */
static void vmflags(void *addr, char *flags, size_t size)
{
	char line[512];
	unsigned long lo, hi, a = (unsigned long)addr;
	int in = 0;
	FILE *f = fopen("/proc/self/smaps", "r");
	flags[0] = 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = lo <= a && a < hi;
		else if (in && !strncmp(line, "VmFlags:", 8))
			snprintf(flags, size, "%s", line + 8);
	}
	fclose(f);
}

static int has(void *addr, const char *flag)
{
	char flags[256], want[8];
	vmflags(addr, flags, sizeof(flags));
	snprintf(want, sizeof(want), " %s ", flag);
	return strstr(flags, want) != NULL;
}

static void check(int sig)
{
	char link[600], target[512];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", opath);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	target[n > 0 ? n : 0] = 0;
	if (!(fcntl(opath, F_GETFL) & O_PATH) || strcmp(target, opath_name))
		fail("O_PATH descriptor");
	(void)sig;
	struct f_owner_ex ex = {0};
	fcntl(owned[0], F_GETOWN_EX, &ex);
	if (ex.type != F_OWNER_PID || ex.pid != getpid() || fcntl(owned[0], F_GETSIG) != SIGUSR2 ||
	    !(fcntl(owned[0], F_GETFL) & O_ASYNC))
		fail("owner, signal or O_ASYNC of the pipe");
	write(owned[1], "x", 1);
	for (int i = 0; i < 100 && !sigusr2; i++)
		usleep(1000);
	if (!sigusr2)
		fail("no SIGUSR2 for I/O on the pipe");
	if (fcntl(big[0], F_GETPIPE_SZ) != 1 << 20)
		fail("pipe size");

	struct stat st;
	fstat(ghost_ro, &st);
	if ((st.st_mode & 07777) != 0642 || st.st_uid != 1234 || st.st_gid != 4321)
		fail("mode or owner of the deleted file");
	if (st.st_mtime != MTIME)
		fail("mtime of the deleted file");
	if (st.st_size != (1 << 20) + 5 || lseek(ghost_ro, 0, SEEK_HOLE) != 4096 ||
	    lseek(ghost_ro, 4096, SEEK_DATA) != 1 << 20)
		fail("holes of the deleted file");
	char buf[8] = {0};
	pwrite(ghost_rw, "shared", 6, 100);
	if (pread(ghost_ro, buf, 6, 100) != 6 || memcmp(buf, "shared", 6))
		fail("the two descriptions of the deleted file are not one inode");

	fstat(mfd, &st);
	if ((st.st_mode & 07777) != 0751)
		fail("mode of the memfd");
	pid_t pid = fork();
	if (pid == 0) {
		char *argv[] = {"script", NULL}, *envp[] = {NULL};
		syscall(SYS_execveat, mfd, "", argv, envp, AT_EMPTY_PATH);
		_exit(99);
	}
	int status;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 7)
		fail("execveat of the memfd");

	if (!has(locked, "lo"))
		fail("mlock of MAP_LOCKED memory");
	const char *want[] = {"dc", "dd", "wf", "sr"};
	for (int i = 0; i < 4; i++)
		if (!has(advised[i], want[i]))
			fail("madvise flags");
	if (mprotect(fmap, 4096, PROT_READ | PROT_WRITE))
		fail("mprotect of a read-only shared file mapping");
	else
		fmap[0] = 'w';
	if (mprotect(pmap, 4096, PROT_READ | PROT_WRITE))
		fail("mprotect of a private read-only file mapping");
	else if (pmap[0] != 'p' || (pmap[0] = 'q', pmap[0] != 'q'))
		fail("private file mapping contents");
	fstat(timed, &st);
	if (st.st_mtime != OLD_MTIME)
		fail("modification time of an open file");

	say(failed ? "FAIL " : "PASS");
	say(failed ? failed : "");
	say("\n");
	_exit(failed ? 1 : 0);
}

int main(int argc, char **argv)
{
	char path[512], link2[512];
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	const char *dir = argv[2];

	snprintf(opath_name, sizeof(opath_name), "%s/opath", dir);
	close(open(opath_name, O_WRONLY | O_CREAT, 0644));
	opath = open(opath_name, O_PATH);
	signal(SIGUSR2, on_usr2);
	pipe(owned);
	struct f_owner_ex ex = {.type = F_OWNER_PID, .pid = getpid()};
	fcntl(owned[0], F_SETOWN_EX, &ex);
	fcntl(owned[0], F_SETSIG, SIGUSR2);
	fcntl(owned[0], F_SETFL, fcntl(owned[0], F_GETFL) | O_ASYNC);
	pipe(big);
	fcntl(big[0], F_SETPIPE_SZ, 1 << 20);

	snprintf(path, sizeof(path), "%s/ghost", dir);
	snprintf(link2, sizeof(link2), "%s/ghost.link", dir);
	ghost_rw = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	pwrite(ghost_rw, "start", 5, 0);
	pwrite(ghost_rw, "end!!", 5, 1 << 20);
	fchmod(ghost_rw, 0642);
	fchown(ghost_rw, 1234, 4321);
	link(path, link2);
	ghost_ro = open(link2, O_RDONLY);
	struct utimbuf ut = {.actime = MTIME, .modtime = MTIME};
	utime(path, &ut);
	unlink(path);
	unlink(link2);

	mfd = memfd_create("script", 0);
	const char *script = "#!/bin/sh\nexit 7\n";
	write(mfd, script, strlen(script));
	fchmod(mfd, 0751);

	locked = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
	int advice[] = {MADV_DONTFORK, MADV_DONTDUMP, MADV_WIPEONFORK, MADV_SEQUENTIAL};
	for (int i = 0; i < 4; i++) {
		advised[i] = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		madvise(advised[i], 4096, advice[i]);
	}
	snprintf(path, sizeof(path), "%s/mapped", dir);
	mapfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ftruncate(mapfd, 4096);
	fmap = mmap(NULL, 4096, PROT_READ, MAP_SHARED, mapfd, 0);
	close(mapfd);
	snprintf(path, sizeof(path), "%s/private", dir);
	int pfd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	write(pfd, "p", 1);
	ftruncate(pfd, 4096);
	close(pfd);
	pfd = open(path, O_RDONLY);
	pmap = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, pfd, 0);
	close(pfd);
	snprintf(path, sizeof(path), "%s/timed", dir);
	timed = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	write(timed, "data", 4);
	struct utimbuf old = {.actime = OLD_MTIME, .modtime = OLD_MTIME};
	utime(path, &old);

	signal(SIGTERM, check);
	char buf[64];
	snprintf(buf, sizeof(buf), "ready pid=%d\n", getpid());
	say(buf);
	for (;;)
		pause();
}
