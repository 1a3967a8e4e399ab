/*
 * A tree in a user namespace of its own, whose ids stand for others outside. Built static.
 * argv: OUT DIR [full [interop]|alone] (with "full", OUT is DIR/out.log; "interop": the
 * segment made by the root, as CRIU 4.2 makes it again). The starter forks a child that
 * unshares the user namespace (with "full", also the PID, mount, UTS, IPC and network
 * namespaces, owned by it); the starter writes its maps, made of two extents each, as zdtm's:
 *   uid 0..999 -> 100000..,  1000..1999 -> 201000..
 *   gid 0..999 -> 300000..,  1000..1999 -> 401000..
 * The child becomes uid and gid 0 inside and forks the init (PID 1 of its namespace with
 * "full"); once the init is set up, the child prints "ready pid=HOST_PID" and exits. The init
 * has:
 *   - supplementary groups 5 and 1001;
 *   - unless "alone", a child that took uids 1000 1001 1002 and gids 1003 1004 1005 and no
 *     groups;
 *   - a memfd owned by 1001:1002; a pipe whose owner was set with euid 1000 (F_GETOWNER_UIDS);
 *   - a read lease on FILES/l, a file of 1000's, taken as 1000 (its file-system uid);
 *   - files in FILES: a (1000:1000, 0640), s (0:5, set-uid 04755) and a deleted one, g
 *     (1000:1001, 0604, with contents), held open. With "full", FILES is /tmp, a tmpfs
 *     mounted with uid=1000,gid=1001 below DIR made its root (pivot_root), with /proc of its
 *     own; without, FILES is DIR/files, owned by the namespace's root;
 *   - with "full" but not "interop": a tmpfs at /tmp/hid/x with a file, hidden by another
 *     mounted at /tmp/hid after;
 *   - with "full": host name "uns", a System V segment made by 1000 (the root with "interop") and
 *     owned by 1000:1001, and
 *     a ping socket, its namespace's ping_group_range "0 1000".
 * On SIGTERM it checks all of it as seen from inside, and its maps as /proc/self shows them,
 * and prints PASS or FAIL.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <netinet/in.h>
#include <sys/fsuid.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef F_GETOWNER_UIDS
#define F_GETOWNER_UIDS 17
#endif

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int full, alone, interop, out;
static const char *dir;
static const char *files = "/tmp";

#define DIE(what)                                                                                  \
	do {                                                                                       \
		dprintf(out, "FAIL userns: setting up %s\n", what);                                \
		_exit(2);                                                                          \
	} while (0)

static int owned(const char *name, uid_t uid, gid_t gid, mode_t mode)
{
	char path[256];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", files, name);
	return !stat(path, &st) && st.st_uid == uid && st.st_gid == gid &&
	       (st.st_mode & 07777) == mode;
}

/* The map /proc/self shows, its numbers joined by blanks. */
static void map_of(const char *file, char *buf, size_t size)
{
	char raw[256] = "";
	int fd = open(file, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, raw, sizeof(raw) - 1);
	close(fd);
	raw[n > 0 ? n : 0] = 0;
	size_t k = 0;
	for (char *t = strtok(raw, " \n"); t && k + 12 < size; t = strtok(NULL, " \n"))
		k += (size_t)snprintf(buf + k, size - k, "%s ", t);
	buf[k] = 0;
}

static int init_rest(int ready);

static int init_main(int ready)
{
	signal(SIGTERM, on_term);
	if (setsid() < 0)
		DIE("its session");
	if (full) {
		if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL))
			DIE("the mounts private");
		if (sethostname("uns", 3))
			DIE("the host name");
		/* Its root: DIR, holding this program and the places it mounts on; its /proc
		 * mounted while the host's is in sight (a user namespace may mount one only then). */
		char at[512];
		if (mount(dir, dir, NULL, MS_BIND | MS_REC, NULL))
			DIE("the root");
		snprintf(at, sizeof(at), "%s/proc", dir);
		if (mount("proc", at, "proc", 0, NULL))
			DIE("/proc");
		snprintf(at, sizeof(at), "%s/tmp", dir);
		if (mount("tmp", at, "tmpfs", 0, "uid=1000,gid=1001,mode=0751"))
			DIE("the tmpfs");
		if (chdir(dir) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) ||
		    chdir("/"))
			DIE("pivot_root");
		/* The starter's stdio and report are the host's: the report is OUT, in DIR. */
		close(0);
		close(1);
		close(2);
		int o = open("/out.log", O_WRONLY | O_APPEND);
		if (o < 0 || dup2(o, 3) < 0)
			DIE("its report");
		if (o != 3)
			close(o);
		out = 3;
		/* Its program from inside (the starter's is the host's). */
		char fd[16];
		snprintf(fd, sizeof(fd), "%d", ready);
		execl("/userns", "userns", "init", fd, interop ? "interop" : NULL, NULL);
		DIE("exec");
	}
	return init_rest(ready);
}

/* The init, in its namespaces (and root), once mounted. */
static int init_rest(int ready)
{
	gid_t groups[] = {5, 1001};
	if (setgroups(2, groups))
		DIE("the groups");
	/* The files. */
	char path[256];
	signal(SIGTERM, on_term);
	snprintf(path, sizeof(path), "%s/a", files);
	int fd = open(path, O_CREAT | O_WRONLY, 0640);
	if (fd < 0 || fchown(fd, 1000, 1000) || fchmod(fd, 0640))
		DIE("file a");
	close(fd);
	snprintf(path, sizeof(path), "%s/s", files);
	fd = open(path, O_CREAT | O_WRONLY, 0755);
	if (fd < 0 || fchown(fd, 0, 5) || fchmod(fd, 04755))
		DIE("file s");
	close(fd);
	snprintf(path, sizeof(path), "%s/g", files);
	int ghost = open(path, O_CREAT | O_RDWR, 0600);
	if (ghost < 0 || write(ghost, "ghost", 5) != 5 || fchown(ghost, 1000, 1001) ||
	    fchmod(ghost, 0604) || unlink(path))
		DIE("file g");
	int mfd = (int)syscall(SYS_memfd_create, "uns", 0);
	if (mfd < 0 || fchown(mfd, 1001, 1002))
		DIE("the memfd");
	int pp[2];
	if (pipe(pp) || setresuid(-1, 1000, -1) || fcntl(pp[0], F_SETOWN, getpid()) ||
	    setresuid(-1, 0, -1))
		DIE("the pipe's owner");
	/* A lease on a file of 1000's, taken as its owner (the root has no CAP_LEASE here). */
	snprintf(path, sizeof(path), "%s/l", files);
	int lfd = open(path, O_CREAT | O_RDONLY, 0644);
	if (lfd < 0 || fchown(lfd, 1000, 1000) || setfsuid(1000) < 0 ||
	    fcntl(lfd, F_SETLEASE, F_RDLCK) || setfsuid(0) != 1000)
		DIE("the lease");
	/* Overmounted (not with "interop"): a tmpfs at /tmp/hid/x with a file, hidden by one
	 * mounted at /tmp/hid after; read for its tar through a copy of the namespace made in
	 * the namespace's own user namespace. */
	int over = full && !interop;
	if (over) {
		int h = -1;
		if (mkdir("/tmp/hid", 0755) || mkdir("/tmp/hid/x", 0755) ||
		    mount("hx", "/tmp/hid/x", "tmpfs", 0, "size=1m") ||
		    (h = open("/tmp/hid/x/f", O_CREAT | O_WRONLY, 0644)) < 0 ||
		    write(h, "hidden", 6) != 6 || close(h) ||
		    mount("hy", "/tmp/hid", "tmpfs", 0, "size=1m"))
			DIE("the overmounted tmpfs");
	}
	int shm = -1, ping = -1;
	if (full) {
		/* Its creator 1000 (the restore makes it as its creator), owned by 1000:1001. */
		if (!interop && setresuid(-1, 1000, -1))
			DIE("euid 1000");
		shm = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0640);
		if (setresuid(-1, 0, -1))
			DIE("euid 0");
		struct shmid_ds ds;
		if (shm < 0 || shmctl(shm, IPC_STAT, &ds))
			DIE("the segment");
		ds.shm_perm.uid = 1000;
		ds.shm_perm.gid = 1001;
		if (shmctl(shm, IPC_SET, &ds))
			DIE("the segment's owner");
		/* A ping socket, for the groups 0 to 1000 of its namespace. */
		int r = open("/proc/sys/net/ipv4/ping_group_range", O_WRONLY);
		if (r < 0 || write(r, "0 1000", 6) != 6)
			DIE("ping_group_range");
		close(r);
		ping = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
		if (ping < 0)
			DIE("the ping socket");
	}
	int cp[2];
	if (pipe(cp))
		DIE("a pipe");
	pid_t child = alone ? 0 : fork();
	if (!alone && child == 0) {
		signal(SIGTERM, SIG_DFL);
		if (setgroups(0, NULL) || setresgid(1003, 1004, 1005) || setresuid(1000, 1001, 1002))
			_exit(3);
		write(cp[1], "c", 1);
		for (;;)
			pause();
	}
	char b;
	if (!alone && read(cp[0], &b, 1) != 1)
		DIE("the child");
	write(ready, "r", 1);

	while (!term)
		pause();

	const char *why = NULL;
	uid_t r, e, s;
	gid_t g[8];
	char map[256];
	char status[4096] = "";
	snprintf(path, sizeof(path), "/proc/%d/status", child);
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		ssize_t n = read(fd, status, sizeof(status) - 1);
		status[n > 0 ? n : 0] = 0;
		close(fd);
	}
	struct stat st;
	uid_t owners[2] = {0, 0};
	char data[8] = "";
	if (getresuid(&r, &e, &s) || r || e || s)
		why = "its uids";
	else if (getgroups(8, g) != 2 || g[0] != 5 || g[1] != 1001)
		why = "its groups";
	else if (map_of("/proc/self/uid_map", map, sizeof(map)),
		 strcmp(map, "0 100000 1000 1000 201000 1000 "))
		why = "its uid map";
	else if (map_of("/proc/self/gid_map", map, sizeof(map)),
		 strcmp(map, "0 300000 1000 1000 401000 1000 "))
		why = "its gid map";
	else if (!alone && (!strstr(status, "Uid:\t1000\t1001\t1002\t1001\n") ||
			    !strstr(status, "Gid:\t1003\t1004\t1005\t1004\n") ||
			    !strstr(status, "Groups:\t \n")))
		why = "the child's ids";
	else if (!owned("a", 1000, 1000, 0640) || !owned("s", 0, 5, 04755))
		why = "the files' owners";
	else if (fstat(ghost, &st) || st.st_uid != 1000 || st.st_gid != 1001 ||
		 (st.st_mode & 07777) != 0604 || pread(ghost, data, 5, 0) != 5 ||
		 strcmp(data, "ghost"))
		why = "the deleted file";
	else if (fstat(mfd, &st) || st.st_uid != 1001 || st.st_gid != 1002)
		why = "the memfd's owner";
	else if (fcntl(pp[0], F_GETOWNER_UIDS, owners) || owners[0] != 0 || owners[1] != 1000)
		why = "the pipe owner's uids";
	else if (fcntl(lfd, F_GETLEASE) != F_RDLCK)
		why = "the lease";
	else if (full && (stat("/tmp", &st) || st.st_uid != 1000 || st.st_gid != 1001 ||
			  (st.st_mode & 07777) != 0751))
		why = "the tmpfs's root";
	if (!why && full) {
		char host[64] = "";
		struct shmid_ds ds;
		gethostname(host, sizeof(host));
		if (strcmp(host, "uns"))
			why = "the host name";
		else if (shmctl(shm, IPC_STAT, &ds) || ds.shm_perm.uid != 1000 ||
			 ds.shm_perm.gid != 1001 || ds.shm_perm.cuid != (interop ? 0 : 1000))
			why = "the segment's owner";
		else {
			int proto = 0, type = 0;
			socklen_t len = sizeof(int);
			char range[32] = "";
			int r = open("/proc/sys/net/ipv4/ping_group_range", O_RDONLY);
			if (r >= 0 && read(r, range, sizeof(range) - 1) < 0)
				range[0] = 0;
			close(r);
			if (getsockopt(ping, SOL_SOCKET, SO_PROTOCOL, &proto, &len) ||
			    getsockopt(ping, SOL_SOCKET, SO_TYPE, &type, &len) || proto != IPPROTO_ICMP ||
			    type != SOCK_DGRAM || strcmp(range, "0\t1000\n"))
				why = "the ping socket";
		}
	}
	if (!why && over) {
		char got[8] = "";
		int h = umount2("/tmp/hid", 0) ? -1 : open("/tmp/hid/x/f", O_RDONLY);
		if (h < 0 || read(h, got, 6) != 6 || strcmp(got, "hidden"))
			why = "the overmounted tmpfs";
		close(h);
	}
	if (!alone)
		kill(child, SIGKILL);
	dprintf(out, why ? "FAIL userns: %s\n" : "PASS userns\n", why);
	return 0;
}

static void write_map(pid_t pid, const char *file, const char *map)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", pid, file);
	int fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, map, strlen(map)) != (ssize_t)strlen(map))
		DIE(file);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc > 2 && !strcmp(argv[1], "init")) {
		/* The init again, in its root (with "full"): its report is at fd 3. */
		out = 3;
		full = 1;
		interop = argc > 3 && !strcmp(argv[3], "interop");
		return init_rest(atoi(argv[2]));
	}
	if (argc < 3)
		return 2;
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	/* For the namespace's root, whose files the host's root's are not. */
	fchmod(out, 0666);
	/* Nothing of the launcher's. */
	for (int fd = 3; fd < 1024; fd++)
		if (fd != out)
			close(fd);
	dir = argv[2];
	full = argc > 3 && !strcmp(argv[3], "full");
	alone = argc > 3 && !strcmp(argv[3], "alone");
	interop = argc > 4 && !strcmp(argv[4], "interop");
	static char own[256];
	/* Open to the namespace's root. */
	chmod(dir, 0755);
	if (!full) {
		snprintf(own, sizeof(own), "%s/files", dir);
		mkdir(own, 0755);
		if (chown(own, 100000, 300000))
			DIE("the files' directory");
		files = own;
	}
	int go[2], up[2];
	if (pipe(go) || pipe(up))
		return 2;
	pid_t c = fork();
	if (c == 0) {
		int flags = CLONE_NEWUSER;
		if (full)
			flags |= CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET;
		char b;
		if (unshare(flags) || write(up[1], "u", 1) != 1 || read(go[0], &b, 1) != 1)
			_exit(2);
		if (setresgid(0, 0, 0) || setresuid(0, 0, 0))
			DIE("ids 0");
		int rp[2];
		if (pipe(rp))
			_exit(2);
		pid_t init = fork();
		if (init == 0) {
			close(rp[0]);
			_exit(init_main(rp[1]));
		}
		close(rp[1]);
		if (read(rp[0], &b, 1) != 1)
			_exit(2);
		dprintf(out, "ready pid=%d\n", init);
		_exit(0);
	}
	char b;
	if (read(up[0], &b, 1) != 1)
		return 2;
	write_map(c, "uid_map", "0 100000 1000\n1000 201000 1000\n");
	write_map(c, "gid_map", "0 300000 1000\n1000 401000 1000\n");
	write(go[1], "g", 1);
	int st;
	waitpid(c, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 2;
}
