/*
 * A container's mounts: the init of a PID and mount namespace of its own, with ROOT as its
 * root (pivot_root). Built static: ROOT holds nothing but this program. argv: ROOT EXT.
 *
 * The starter unshares both namespaces and forks the init; once the init is set up it appends
 * "ready pid=HOST_PID" to ROOT/out.log and exits. The init mounts, below ROOT:
 *   /proc    proc (nosuid, nodev, noexec)
 *   /tmp     tmpfs "vtmp" (mode=1777, size=4m): a file written, a subdirectory with a file of
 *            mode 0640, a symlink, a file mapped shared
 *   /mnt     a read-only bind of /tmp/sub (/tmp made shared first: a peer of it)
 *   /filebind a bind of the file /tmp/data (a peer too)
 *   /gonebind a bind of /tmp/gone, private, removed since (its root reads "/gone//deleted")
 *   /slave   a bind of /tmp made a slave of it
 *   /ext     EXT bound (external: its files are the host's)
 *   /sys     sysfs, read-only
 *   /ub      a tmpfs with a file, unbindable
 *   /dev/pts a devpts instance of its own
 *   /dev/mqueue mqueue
 * then makes ROOT its root, lets the host's mounts go and runs itself again from inside
 * (ROOT/mntns "inside" FD). It keeps /tmp/data open at offset 2,
 * holds its own /proc/1/status open, an epoll set on its /proc/1/mountinfo, a pty of its devpts with input unread, works in /tmp/sub, listens at /tmp/srv.sock with a connection accepted (bytes queued), writes
 * its report into /out.log (its stdio). It holds a file deleted from /tmp/sub open through the
 * read-only /mnt (a ghost made again on a read-only mount).
 *
 * It has a child in a mount namespace nested in its own (nested_main), whose own child was made
 * before that namespace, in one of its own copied from the init's (grand_main, a tmpfs of its
 * own), and holds a file of that
 * child's own tmpfs (through /proc/CHILD/root), with an inotify watch on it. Then it mounts a tmpfs
 * "z2" at /z2, binds it at /z2/b, and over that its directory /b from there.
 * On SIGTERM it checks, from inside: its mountinfo (every mount's root, place, flags, type,
 * source and options; in any order) reads as before, the files read as written (through the fd at its
 * offset, through the bind, the symlink, the mapping), the bind is still read-only, the
 * external file is there, the deleted file reads as written under its name, its cwd, its pid 1 in its own /proc, the listener's name, its
 * connection and a new one to that name; a mount below /tmp/sub shows at
 * /mnt and under /slave, one below /slave not under /tmp. Prints PASS mntns or FAIL.
 *
 * With MNTNS_MORE set, it also has the children of pivot_main, gone_main and (with
 * MNTNS_PIDPROC too, which CRIU cannot dump) pidproc_main (below), and a
 * tmpfs at /hd/a/b with a file, hidden by a tmpfs mounted at /hd/a after and another stacked
 * on that: checked last by unmounting those two; zdtm's mntns_remap at /rm (a moved tmpfs
 * hiding a member of a peer group and what is on it; checked by mounting on the visible member,
 * which the hidden one gets too); and /console, a bind of its pty's slave: what is written
 * there comes out of the master.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

#define DIE(what) do { dprintf(2, "FAIL setup %s: %s\n", what, strerror(errno)); _exit(1); } while (0)

static char before[16384];

/*
 * mountinfo without the ids and devices (they change): root place flags - type source opts,
 * sorted (CRIU 4.2 makes them again in another order).
 */
static int by_text(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void mounts(char *buf, size_t size)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[1024], *lines[64], *words[64][16];
	int count = 0, nwords[64];
	size_t used = 0;
	buf[0] = 0;
	if (!f)
		return;
	while (count < 64 && fgets(line, sizeof(line), f)) {
		int n = 0;
		char *copy = strdup(line);
		for (char *s = strtok(copy, " \n"); s && n < 16; s = strtok(NULL, " \n"))
			words[count][n++] = s;
		if (n < 10)
			continue;
		nwords[count++] = n;
	}
	fclose(f);
	/* Peer group numbers change: each is named by its first member's mount point. */
	for (int c = 0; c < count; c++) {
		char one[1024];
		int len = snprintf(one, sizeof(one), "%s %s %s", words[c][3], words[c][4], words[c][5]);
		for (int i = 6; i < nwords[c]; i++) {
			char *w = words[c][i], *name = NULL;
			char *colon = strchr(w, ':');
			if (colon && (!strncmp(w, "shared:", 7) || !strncmp(w, "master:", 7))) {
				for (int d = 0; d < count; d++)
					for (int j = 6; j < nwords[d] && strcmp(words[d][j], "-"); j++)
						if (!strncmp(words[d][j], "shared:", 7) &&
						    !strcmp(words[d][j] + 7, colon + 1) &&
						    (!name || strcmp(words[d][4], name) < 0))
							name = words[d][4];
				len += snprintf(one + len, sizeof(one) - len, " %.7s@%s", w, name ? name : "?");
			} else {
				len += snprintf(one + len, sizeof(one) - len, " %s", w);
			}
		}
		lines[c] = strdup(one);
	}
	qsort(lines, count, sizeof(lines[0]), by_text);
	for (int i = 0; i < count; i++) {
		used += snprintf(buf + used, size - used, "%s\n", lines[i]);
		free(lines[i]);
	}
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		DIE(path);
	fchmod(fd, mode);
	close(fd);
}

static int read_is(const char *path, const char *text)
{
	char buf[256] = {0};
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n == (ssize_t)strlen(text) && !memcmp(buf, text, n);
}

/* How many mounts are at `path` (mountinfo's fifth field), in any place of the tree. */
static int mounts_at(const char *path)
{
	char line[1024], at[512];
	int n = 0;
	FILE *f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %*s %*s %511s", at) == 1 && !strcmp(at, path))
			n++;
	fclose(f);
	return n;
}

/*
 * Whether deleted file `fd`, held through the read-only bind /mnt, reads as written, is named
 * as before, and left no name behind in `dir` (when given).
 */
static int ghost_ok(int fd, const char *dir)
{
	char buf[64] = {0}, link[64], name[256] = {0};
	if (pread(fd, buf, sizeof(buf) - 1, 0) != 10 || strcmp(buf, "ghost data"))
		return 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if (readlink(link, name, sizeof(name) - 1) < 0 || strcmp(name, "/mnt/ghost (deleted)"))
		return 0;
	if (!dir)
		return 1;
	DIR *d = opendir(dir);
	struct dirent *e;
	int clean = d != NULL;
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, "ghost", 5))
			clean = 0;
	if (d)
		closedir(d);
	return clean;
}

static int init_main(const char *root, const char *ext, int ready)
{
	char p[4096];
	for (int fd = 3; fd < 1024; fd++)
		if (fd != ready)
			close(fd);
	if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL))
		DIE("private");
	if (mount(root, root, NULL, MS_BIND, NULL))
		DIE("root");
	snprintf(p, sizeof(p), "%s/proc", root);
	if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
		DIE("proc");
	snprintf(p, sizeof(p), "%s/tmp", root);
	if (mount("vtmp", p, "tmpfs", 0, "mode=1777,size=4m"))
		DIE("tmpfs");
	snprintf(p, sizeof(p), "%s/tmp/sub", root);
	mkdir(p, 0750);
	snprintf(p, sizeof(p), "%s/tmp/data", root);
	write_file(p, "hello world", 0644);
	snprintf(p, sizeof(p), "%s/tmp/sub/f", root);
	write_file(p, "in sub", 0640);
	snprintf(p, sizeof(p), "%s/tmp/link", root);
	if (symlink("sub/f", p))
		DIE("symlink");
	snprintf(p, sizeof(p), "%s/tmp/mapped", root);
	write_file(p, "mapped page", 0600);
	snprintf(p, sizeof(p), "%s/tmp/sub/prop", root);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/tmp/x", root);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/tmp", root);
	if (mount(NULL, p, NULL, MS_SHARED, NULL))
		DIE("shared");
	char from[4096];
	snprintf(from, sizeof(from), "%s/tmp/sub", root);
	snprintf(p, sizeof(p), "%s/mnt", root);
	if (mount(from, p, NULL, MS_BIND, NULL) ||
	    mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL))
		DIE("bind");
	snprintf(p, sizeof(p), "%s/ext", root);
	if (mount(ext, p, NULL, MS_BIND, NULL))
		DIE("ext");
	snprintf(from, sizeof(from), "%s/tmp/data", root);
	snprintf(p, sizeof(p), "%s/filebind", root);
	if (mount(from, p, NULL, MS_BIND, NULL))
		DIE("file bind");
	snprintf(from, sizeof(from), "%s/tmp/gone", root);
	snprintf(p, sizeof(p), "%s/gonebind", root);
	if (mkdir(from, 0750) || mkdir(p, 0750) || mount(from, p, NULL, MS_BIND, NULL) ||
	    mount(NULL, p, NULL, MS_PRIVATE, NULL) || rmdir(from))
		DIE("bind of a removed directory");
	snprintf(from, sizeof(from), "%s/tmp", root);
	snprintf(p, sizeof(p), "%s/slave", root);
	if (mount(from, p, NULL, MS_BIND, NULL) || mount(NULL, p, NULL, MS_SLAVE, NULL))
		DIE("slave");
	snprintf(p, sizeof(p), "%s/sys", root);
	if (mount("sysfs", p, "sysfs", MS_RDONLY | MS_NOSUID, NULL))
		DIE("sysfs");
	snprintf(p, sizeof(p), "%s/ub", root);
	if (mount("ub", p, "tmpfs", 0, "size=1m"))
		DIE("unbindable tmpfs");
	snprintf(p, sizeof(p), "%s/ub/kept", root);
	write_file(p, "unbindable", 0600);
	snprintf(p, sizeof(p), "%s/ub", root);
	if (mount(NULL, p, NULL, MS_UNBINDABLE, NULL))
		DIE("unbindable");
	snprintf(p, sizeof(p), "%s/dev/pts", root);
	if (mount("devpts", p, "devpts", 0, "newinstance,ptmxmode=0666,mode=620"))
		DIE("devpts");
	snprintf(p, sizeof(p), "%s/dev/mqueue", root);
	if (mount("mqueue", p, "mqueue", MS_NOSUID, NULL))
		DIE("mqueue");
	if (chdir(root) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) ||
	    chdir("/"))
		DIE("pivot_root");
	/* Its program from inside (the starter's is the host's). */
	char fd[16];
	snprintf(fd, sizeof(fd), "%d", ready);
	execl("/mntns", "mntns", "inside", fd, NULL);
	DIE("exec");
}

/*
 * A child in a mount namespace of its own nested in the init's, made as systemd makes one for
 * a service with PrivateTmp: a copy made a slave of the init's, /tmp/sub bound over /tmp, the
 * /dev/mqueue and /gonebind copies unmounted, then all shared again; a tmpfs of its own at /nt
 * with a file. It holds the init's file
 * deleted later through its copy of the read-only /mnt. On SIGTERM it checks its mounts read as
 * before, its /tmp is its own and the deleted file reads as written; exits 0 when whole.
 */
/*
 * A child of the nested child, forked before that one made its namespace: its own namespace
 * is a copy of the init's (as zdtm's tempfs_subns), with a tmpfs of its own at /gt. On SIGTERM
 * it checks its mounts read as before, its file, and that the nested child's tmpfs is not
 * mounted here (/nt/f is not there); exits 0 when whole.
 */
static int grand_main(int ready)
{
	char before_g[16384], after_g[16384];
	/* (Made after the nested tmpfs, its mounts private: see nested_main.) */
	unsigned long how = getenv("MNTNS_SHARED") ? MS_PRIVATE : MS_SLAVE;
	/* (Without the copy of the removed bind, which CRIU 4.2 cannot make twice.) */
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | how, NULL) ||
	    (umount2("/gonebind", MNT_DETACH) && errno != EINVAL))
		_exit(20);
	if ((mkdir("/gt", 0755) && errno != EEXIST) || mount("gtmp", "/gt", "tmpfs", 0, "size=1m"))
		_exit(21);
	write_file("/gt/f", "grandchild tmpfs", 0644);
	mounts(before_g, sizeof(before_g));
	write(ready, "g", 1);
	close(ready);
	while (!term)
		pause();
	mounts(after_g, sizeof(after_g));
	if (strcmp(before_g, after_g)) {
		printf("grandchild mounts before:\n%safter:\n%s", before_g, after_g);
		_exit(22);
	}
	if (!read_is("/gt/f", "grandchild tmpfs") || !access("/nt/f", F_OK))
		_exit(23);
	_exit(0);
}

/* Forks the grandchild, and waits until it is set up. */
static pid_t fork_grand(void)
{
	int gp[2];
	char c;
	if (pipe(gp))
		_exit(13);
	pid_t grand = fork();
	if (grand == 0) {
		close(gp[0]);
		_exit(grand_main(gp[1]));
	}
	close(gp[1]);
	if (read(gp[0], &c, 1) != 1)
		_exit(14);
	close(gp[0]);
	return grand;
}

static int nested_main(int ready)
{
	char before_n[16384], after_n[16384];
	/* Its child, made before its namespace (with MNTNS_SHARED set, after its tmpfs: the child's
	 * namespace then shares that tmpfs, which a dump refuses). */
	int shared = getenv("MNTNS_SHARED") != NULL;
	pid_t grand = shared ? 0 : fork_grand();
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) ||
	    mount("/tmp/sub", "/tmp", NULL, MS_BIND, NULL) || umount2("/dev/mqueue", MNT_DETACH) ||
	    umount2("/gonebind", MNT_DETACH) ||
	    mount(NULL, "/", NULL, MS_REC | MS_SHARED, NULL))
		_exit(10);
	/* A tmpfs of its own, with a file (its tar is its own too). */
	if (mkdir("/nt", 0755) || mount("ntmp", "/nt", "tmpfs", 0, "size=1m"))
		_exit(12);
	write_file("/nt/f", "nested tmpfs", 0644);
	if (shared)
		grand = fork_grand();
	/* The init's deleted file, held through this namespace's copy of the read-only bind. */
	int ghost = open("/mnt/ghost", O_RDONLY);
	if (ghost < 0)
		_exit(11);
	mounts(before_n, sizeof(before_n));
	write(ready, "n", 1);
	close(ready);
	while (!term)
		pause();
	mounts(after_n, sizeof(after_n));
	if (strcmp(before_n, after_n)) {
		printf("nested mounts before:\n%safter:\n%s", before_n, after_n);
		_exit(1);
	}
	if (!read_is("/tmp/f", "in sub") || !access("/tmp/data", F_OK))
		_exit(2);
	if (!ghost_ok(ghost, NULL))
		_exit(3);
	if (!read_is("/nt/f", "nested tmpfs"))
		_exit(4);
	int gstatus;
	kill(grand, SIGTERM);
	if (waitpid(grand, &gstatus, 0) != grand || !WIFEXITED(gstatus) || WEXITSTATUS(gstatus)) {
		printf("grandchild status 0x%x\n", gstatus);
		_exit(5);
	}
	_exit(0);
}

/*
 * With MNTNS_MORE set: a child in a mount namespace of its own whose root is not the init's
 * (pivot_root in it, as a container in the container): with `bind`, a bind of the init's
 * /tmp/sub (a directory of its tmpfs); else a tmpfs of its own, with that directory bound at
 * /sub before the pivot. It writes /pf there, mounts
 * a tmpfs at /pt with a file, and proc; its executable and mappings stay on the init's root, which it
 * no longer has. On SIGTERM it checks that its mounts read as before, its files (and the
 * init's /tmp/sub/f through its bind), and that the init's mounts are not there; exits 0 when
 * whole.
 */
static int pivot_main(int ready, int bind)
{
	char before_p[8192], after_p[8192];
	const char *dir = bind ? "/pr1" : "/pr0";
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
	    (mkdir(dir, 0755) && errno != EEXIST))
		_exit(30);
	char sub[16];
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	if (bind ? mount("/tmp/sub", dir, NULL, MS_BIND, NULL)
		 : mount("prt", dir, "tmpfs", 0, "size=1m,mode=755") || mkdir(sub, 0755) ||
			   mount("/tmp/sub", sub, NULL, MS_BIND, NULL))
		_exit(31);
	if (chdir(dir) || (mkdir("old", 0755) && errno != EEXIST) ||
	    syscall(SYS_pivot_root, ".", "old") || umount2("/old", MNT_DETACH) || rmdir("/old") ||
	    chdir("/"))
		_exit(32);
	write_file("/pf", bind ? "pivot bind" : "pivot tmpfs", 0644);
	if (mkdir("/pt", 0755) || mount("ptmp", "/pt", "tmpfs", 0, "size=1m"))
		_exit(33);
	write_file("/pt/f", "pivot inner", 0644);
	if ((mkdir("/proc", 0555) && errno != EEXIST) || mount("proc", "/proc", "proc", 0, NULL))
		_exit(37);
	mounts(before_p, sizeof(before_p));
	write(ready, "p", 1);
	close(ready);
	while (!term)
		pause();
	mounts(after_p, sizeof(after_p));
	if (strcmp(before_p, after_p)) {
		printf("pivoted mounts before:\n%safter:\n%s", before_p, after_p);
		_exit(34);
	}
	if (!read_is("/pf", bind ? "pivot bind" : "pivot tmpfs") || !read_is("/pt/f", "pivot inner"))
		_exit(35);
	if (!read_is(bind ? "/f" : "/sub/f", "in sub") || !access("/tmp/data", F_OK) || !before_p[0])
		_exit(36);
	_exit(0);
}

/* The mount id of descriptor `fd` (fdinfo's mnt_id). */
static int mnt_id_of(int fd)
{
	char p[64], line[256];
	int id = -1;
	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(p, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "mnt_id: %d", &id) == 1)
			break;
	if (f)
		fclose(f);
	return id;
}

/*
 * With MNTNS_MORE set, also: a child in a mount namespace nested in the init's that holds
 * deleted files through a bind of a tmpfs it unmounted since (zdtm's mntns_link_remap and
 * mntns_link_ghost). The init mounts tmpfs "gz" at /gz with directories 1 and 2, binds /gz/1
 * at /g1, and writes /g1/R and /g1/G, each linked at /gz/2 too, and opens both through /g1
 * (r1, g1). The child, holding those, unmounts /g1, binds /gz/2 at /g2, unmounts /gz, and opens
 * /g2/R and /g2/G (r2, g2). Then the init links R at /gz/R and removes both names of each:
 * R lives on under /gz/R (a link remap), G nowhere (a ghost). On SIGTERM the child checks each
 * pair is one inode (R with one link, G with none) on two mounts, r2 and g2 named at /g2,
 * their contents; exits 0 when whole.
 */
static int gone_main(int ready, int r1, int g1)
{
	/* (Without the copy of the removed bind, which CRIU 4.2 cannot make twice.) */
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) ||
	    umount2("/gonebind", MNT_DETACH) || umount2("/g1", MNT_DETACH) ||
	    mount("/gz/2", "/g2", NULL, MS_BIND, NULL) || umount2("/gz", MNT_DETACH))
		_exit(40);
	int r2 = open("/g2/R", O_RDWR), g2 = open("/g2/G", O_RDWR);
	if (r2 < 0 || g2 < 0)
		_exit(41);
	write(ready, "z", 1);
	close(ready);
	while (!term)
		pause();
	struct stat a, b;
	char name[4096], link[64];
	for (int i = 0; i < 2; i++) {
		int x = i ? g1 : r1, y = i ? g2 : r2;
		if (fstat(x, &a) || fstat(y, &b) || a.st_ino != b.st_ino || a.st_nlink != (i ? 0 : 1))
			_exit(42 + i);
		if (mnt_id_of(x) == mnt_id_of(y))
			_exit(44);
		snprintf(link, sizeof(link), "/proc/self/fd/%d", y);
		ssize_t n = readlink(link, name, sizeof(name) - 1);
		name[n > 0 ? n : 0] = 0;
		if (strcmp(name, i ? "/g2/G (deleted)" : "/g2/R (deleted)")) {
			printf("gone: fd %d named %s\n", y, name);
			_exit(45);
		}
		char buf[8] = "";
		if (pread(y, buf, 7, 0) != 7 || memcmp(buf, i ? "ghost!!" : "remap!!", 7))
			_exit(46);
	}
	_exit(0);
}

/* Sets up gone_main's files and child (see there); returns the child. */
static pid_t fork_gone(void)
{
	int gp[2];
	char c;
	if (mkdir("/gz", 0755) || mount("gz", "/gz", "tmpfs", 0, "size=1m") ||
	    mkdir("/gz/1", 0755) || mkdir("/gz/2", 0755) || mkdir("/g1", 0755) ||
	    mkdir("/g2", 0755) || mount("/gz/1", "/g1", NULL, MS_BIND, NULL))
		_exit(17);
	write_file("/g1/R", "remap!!", 0644);
	write_file("/g1/G", "ghost!!", 0644);
	int r1 = open("/g1/R", O_RDWR), g1 = open("/g1/G", O_RDWR);
	if (r1 < 0 || g1 < 0 || link("/gz/1/R", "/gz/2/R") || link("/gz/1/G", "/gz/2/G") ||
	    pipe(gp))
		_exit(18);
	pid_t child = fork();
	if (child == 0) {
		close(gp[0]);
		_exit(gone_main(gp[1], r1, g1));
	}
	close(gp[1]);
	if (read(gp[0], &c, 1) != 1 || link("/gz/1/R", "/gz/R") || unlink("/gz/1/R") ||
	    unlink("/gz/2/R") || unlink("/gz/1/G") || unlink("/gz/2/G"))
		_exit(19);
	close(gp[0]);
	close(r1);
	close(g1);
	return child;
}

/*
 * With MNTNS_MORE and MNTNS_PIDPROC set: a child in a PID and a mount namespace of its own (as `unshare -pfm
 * --mount-proc` makes), whose init (1 there) mounts its namespace's proc at /proc, over its
 * copy of the container's (nosuid, nodev, noexec, hidepid=1). On SIGTERM the init checks that
 * its mounts read as before (the container's probes aside) and that /proc/self is 1 there; the
 * child exits as the init did.
 */
static int pidproc_init(int ready)
{
	char before_q[16384], after_q[16384], self[32] = "";
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=1"))
		_exit(50);
	/* MNTNS_PIDPROC=hold: a file of it held open (a dump refuses). */
	if (!strcmp(getenv("MNTNS_PIDPROC"), "hold") && open("/proc/self/status", O_RDONLY) < 0)
		_exit(56);
	mounts(before_q, sizeof(before_q));
	write(ready, "q", 1);
	close(ready);
	while (!term)
		pause();
	mounts(after_q, sizeof(after_q));
	/* Less the container's probes (its propagation checks, just before), which reach here. */
	for (char *p; (p = strstr(after_q, " - tmpfs probe "));) {
		char *start = p, *end = strchr(p, '\n');
		while (start > after_q && start[-1] != '\n')
			start--;
		memmove(start, end + 1, strlen(end + 1) + 1);
	}
	if (strcmp(before_q, after_q)) {
		printf("pidproc mounts before:\n%safter:\n%s", before_q, after_q);
		_exit(51);
	}
	if (readlink("/proc/self", self, sizeof(self) - 1) <= 0 || strcmp(self, "1")) {
		printf("pidproc: /proc/self is %s\n", self);
		_exit(52);
	}
	_exit(0);
}

static int pidproc_main(int ready)
{
	if (unshare(CLONE_NEWNS | CLONE_NEWPID) || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL))
		_exit(53);
	pid_t init = fork();
	if (init < 0)
		_exit(54);
	if (init == 0)
		_exit(pidproc_init(ready));
	close(ready);
	while (!term)
		pause();
	int status = -1;
	kill(init, SIGTERM);
	waitpid(init, &status, 0);
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 55);
}

/* Forks a pidproc_main child, and waits until its init is set up. */
static pid_t fork_pidproc(void)
{
	int pp[2];
	char c;
	if (pipe(pp))
		_exit(19);
	pid_t child = fork();
	if (child == 0) {
		close(pp[0]);
		_exit(pidproc_main(pp[1]));
	}
	close(pp[1]);
	if (read(pp[0], &c, 1) != 1)
		_exit(20);
	close(pp[0]);
	return child;
}

/* Forks a pivot_main child, and waits until it is set up. */
static pid_t fork_pivot(int bind)
{
	int pp[2];
	char c;
	if (pipe(pp))
		_exit(15);
	pid_t child = fork();
	if (child == 0) {
		close(pp[0]);
		_exit(pivot_main(pp[1], bind));
	}
	close(pp[1]);
	if (read(pp[0], &c, 1) != 1)
		_exit(16);
	close(pp[0]);
	return child;
}

static int inside_main(int ready)
{
	int out = open("/out.log", O_WRONLY | O_APPEND);
	if (out < 0)
		DIE("out.log");
	dup2(out, 1);
	dup2(out, 2);
	int null = open("/tmp/data", O_RDONLY);
	dup2(null, 0);
	close(out);
	close(null);
	setvbuf(stdout, NULL, _IONBF, 0);

	/* The nested child, set up before the init tells it is ready; it opens the file the
	 * init deletes below. */
	write_file("/tmp/sub/ghost", "ghost data", 0600);
	int np[2];
	if (pipe(np))
		DIE("pipe");
	pid_t nested = fork();
	if (nested == 0) {
		close(np[0]);
		_exit(nested_main(np[1]));
	}
	close(np[1]);
	char c;
	if (read(np[0], &c, 1) != 1)
		DIE("nested namespace");
	close(np[0]);
	pid_t pivots[4] = {0, 0, 0, 0};
	int more = getenv("MNTNS_MORE") != NULL;
	if (more) {
		pivots[0] = fork_pivot(0);
		pivots[1] = fork_pivot(1);
		pivots[2] = fork_gone();
		if (getenv("MNTNS_PIDPROC"))
			pivots[3] = fork_pidproc();
		/* Overmounted: a tmpfs at /hd/a/b with a file, hidden by one mounted at /hd/a
		 * after (zdtm's tempfs_overmounted). */
		if (mkdir("/hd", 0755) || mount("hd", "/hd", "tmpfs", 0, "size=1m") ||
		    mkdir("/hd/a", 0755) || mkdir("/hd/a/b", 0755) ||
		    mount("hb", "/hd/a/b", "tmpfs", 0, "size=1m"))
			DIE("the hidden tmpfs");
		write_file("/hd/a/b/f", "hidden", 0644);
		if (mount("ha", "/hd/a", "tmpfs", 0, "size=1m"))
			DIE("the tmpfs hiding it");
		write_file("/hd/a/top", "top", 0644);
		if (mount("hc", "/hd/a", "tmpfs", 0, "size=1m"))
			DIE("the tmpfs stacked on it");
		write_file("/hd/a/top2", "top2", 0644);
		/* zdtm's mntns_remap: /rm/1, a bind of tmpfs /rm's /1, with /1/a bound on it and
		 * shared, and a tmpfs "rc" at /1/a/c on that; a tmpfs "r2" with /1/a bound on it too
		 * (the group's second member, and "rc" propagated on it), then moved over /rm/1.
		 * The first bind of /1/a and its "rc" are hidden there; the second's are not. */
		if (mkdir("/rm", 0755) || mount("rm", "/rm", "tmpfs", 0, "size=1m") ||
		    mkdir("/rm/1", 0755) || mkdir("/rm/2", 0755) ||
		    mount("/rm/1", "/rm/1", NULL, MS_BIND, NULL) ||
		    mount(NULL, "/rm/1", NULL, MS_PRIVATE, NULL) ||
		    mount("r2", "/rm/2", "tmpfs", 0, "size=1m") || mkdir("/rm/1/a", 0755) ||
		    mkdir("/rm/2/a", 0755) || mount("/rm/1/a", "/rm/1/a", NULL, MS_BIND, NULL) ||
		    mount(NULL, "/rm/1/a", NULL, MS_SHARED, NULL) ||
		    mount("/rm/1/a", "/rm/2/a", NULL, MS_BIND, NULL) || mkdir("/rm/1/a/c", 0755) ||
		    mount("rc", "/rm/1/a/c", "tmpfs", 0, "size=1m"))
			DIE("zdtm's mntns_remap");
		write_file("/rm/1/a/c/f", "remap", 0644);
		write_file("/rm/2/top", "r2", 0644);
		if (mount("/rm/2", "/rm/1", NULL, MS_MOVE, NULL))
			DIE("zdtm's mntns_remap (the move)");
	}
	/* The nested child's own tmpfs, which this namespace does not have, reached through the
	 * child's /proc root: a file of it held open here and watched (zdtm's inotify01). */
	char ntpath[64];
	snprintf(ntpath, sizeof(ntpath), "/proc/%d/root/nt/f", nested);
	int ntf = open(ntpath, O_RDWR), ify = inotify_init1(IN_NONBLOCK);
	if (ntf < 0 || ify < 0 || inotify_add_watch(ify, ntpath, IN_MODIFY) != 1)
		DIE("the nested tmpfs's file");
	/* A tmpfs bound into itself, then its directory at that place bound over it: the last bind
	 * shows the directory (/b), not the bind made on it (zdtm's tempfs_overmounted01). Made
	 * after the nested child's copy. */
	if (mkdir("/z2", 0755) || mount("z2", "/z2", "tmpfs", 0, "size=1m") || mkdir("/z2/b", 0755) ||
	    mount("/z2", "/z2/b", NULL, MS_BIND, NULL) || mount("/z2/b/b", "/z2/b", NULL, MS_BIND, NULL))
		DIE("z2");

	int data = open("/tmp/data", O_RDWR);
	if (data < 0 || lseek(data, 2, SEEK_SET) != 2)
		DIE("data");
	int mfd = open("/tmp/mapped", O_RDWR);
	char *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (map == MAP_FAILED)
		DIE("mmap");
	close(mfd);
	memcpy(map, "MAPPED", 6);
	/* A deleted file held through the read-only bind: made again there at restore (and
	 * linked from the nested namespace's copy of the bind, another mount). */
	int ghost = open("/mnt/ghost", O_RDONLY);
	if (ghost < 0 || unlink("/tmp/sub/ghost"))
		DIE("a deleted file on the read-only bind");
	/* A listener at a name in the tmpfs, with a connection accepted. */
	struct sockaddr_un sun = {.sun_family = AF_UNIX, .sun_path = "/tmp/srv.sock"};
	int lsk = socket(AF_UNIX, SOCK_STREAM, 0), csk = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(lsk, (void *)&sun, sizeof(sun)) || listen(lsk, 4) ||
	    connect(csk, (void *)&sun, sizeof(sun)))
		DIE("unix socket");
	int ssk = accept(lsk, NULL, NULL);
	if (ssk < 0 || write(csk, "ping", 4) != 4)
		DIE("accept");
	/* A pty of its own devpts instance, with input the slave has not read. */
	int ptm = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY), pts = -1, unlock = 0;
	if (ptm < 0 || ioctl(ptm, TIOCSPTLCK, &unlock) ||
	    (pts = open("/dev/pts/0", O_RDWR | O_NOCTTY)) < 0 || write(ptm, "typed\n", 6) != 6)
		DIE("pty");
	/* A console bound from that pty's slave (zdtm's pty-console): made before the terminals
	 * at restore. */
	if (more && (close(open("/console", O_CREAT | O_RDONLY, 0644)) ||
		     mount("/dev/pts/0", "/console", NULL, MS_BIND, NULL)))
		DIE("the console bound from the pty");
	int status = open("/proc/1/status", O_RDONLY);
	if (status < 0)
		DIE("/proc/1/status");
	/* An epoll set watching its own mountinfo (a /proc file made late at restore), as systemd. */
	int minfo = open("/proc/1/mountinfo", O_RDONLY), ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLPRI, .data.u64 = 77};
	if (minfo < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, minfo, &ev))
		DIE("epoll on mountinfo");
	if (chdir("/tmp/sub"))
		DIE("cwd");
	mounts(before, sizeof(before));
	write(ready, "r", 1);
	close(ready);

	while (!term)
		pause();

	const char *why = NULL;
	int nstatus = -1;
	kill(nested, SIGTERM);
	waitpid(nested, &nstatus, 0);
	char after[16384], buf[64] = {0};
	mounts(after, sizeof(after));
	struct stat st;
	if (strcmp(before, after)) {
		printf("mounts before:\n%safter:\n%s", before, after);
		why = "the mounts changed";
	} else if (pread(data, buf, 3, 0) != 3 || memcmp(buf, "hel", 3) ||
		   read(data, buf, 3) != 3 || memcmp(buf, "llo", 3))
		why = "the open file lost its contents or offset";
	else if (!read_is("f", "in sub") || stat("f", &st) || (st.st_mode & 0777) != 0640)
		why = "the tmpfs file in the cwd lost its contents or mode";
	else if (!read_is("/tmp/link", "in sub"))
		why = "the symlink";
	else if (!read_is("/mnt/f", "in sub"))
		why = "the bind mount";
	else if (!read_is("/filebind", "hello world"))
		why = "the bind mount of a file";
	else if (!read_is("/ub/kept", "unbindable"))
		why = "the unbindable tmpfs's file";
	else if (open("/mnt/new", O_WRONLY | O_CREAT, 0600) >= 0 || errno != EROFS)
		why = "the bind mount is no longer read-only";
	else if (!ghost_ok(ghost, "/tmp/sub"))
		why = "the deleted file held through the read-only bind";
	else if (!read_is("/ext/hostfile", "from the host"))
		why = "the external mount";
	else if (memcmp(map, "MAPPED page", 11) || !read_is("/tmp/mapped", "MAPPED page"))
		why = "the shared mapping of the tmpfs file";
	else if (!getcwd(buf, sizeof(buf)) || strcmp(buf, "/tmp/sub"))
		why = "the working directory";
	else if (readlink("/proc/self", buf, sizeof(buf)) != 1 || buf[0] != '1')
		why = "its own /proc";
	else if (pread(status, buf, 11, 0) != 11 || memcmp(buf, "Name:\tmntns", 11))
		why = "its open /proc/1/status";
	else if (epoll_ctl(ep, EPOLL_CTL_ADD, minfo, &ev) == 0 || errno != EEXIST)
		why = "its epoll set no longer watches its mountinfo";
	else if (ioctl(ptm, TIOCGPTN, &unlock) || unlock != 0 || read(pts, buf, 6) != 6 ||
		 memcmp(buf, "typed\n", 6) || !ttyname(pts) || strcmp(ttyname(pts), "/dev/pts/0"))
		why = "its pty (index, unread input, name)";
	else if (access("/sys/kernel", F_OK))
		why = "sysfs";
	else if (({
			 struct sockaddr_un got = {0};
			 socklen_t len = sizeof(got);
			 getsockname(lsk, (void *)&got, &len) || strcmp(got.sun_path, "/tmp/srv.sock");
		 }))
		why = "the listener's name";
	else if (read(ssk, buf, 4) != 4 || memcmp(buf, "ping", 4) || write(ssk, "pong", 4) != 4 ||
		 read(csk, buf, 4) != 4 || memcmp(buf, "pong", 4))
		why = "the accepted unix connection";
	else if (({
			 int c = socket(AF_UNIX, SOCK_STREAM, 0);
			 struct ucred cred = {0};
			 socklen_t len = sizeof(cred);
			 c < 0 || connect(c, (void *)&sun, sizeof(sun)) || accept(lsk, NULL, NULL) < 0 ||
				 getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) ||
				 cred.pid != getpid();
		 }))
		why = "a new connection to the listener's name (or its peer credentials)";
	/* Propagation: into the peer (/mnt) and the slave (/slave), not back from the slave. */
	else if (mount("probe", "/tmp/sub/prop", "tmpfs", 0, NULL) ||
		 write(open("/tmp/sub/prop/p", O_WRONLY | O_CREAT, 0600), "p", 1) != 1)
		why = "a mount below the shared tmpfs";
	else if (!read_is("/mnt/prop/p", "p"))
		why = "the peer group: a mount did not propagate to the bind";
	else if (!read_is("/slave/sub/prop/p", "p"))
		why = "the slave: a mount did not propagate from its master";
	else if (mount("probe", "/slave/x", "tmpfs", 0, NULL) ||
		 write(open("/slave/x/q", O_WRONLY | O_CREAT, 0600), "q", 1) != 1 ||
		 !access("/tmp/x/q", F_OK))
		why = "the slave: a mount propagated back to its master";
	if (!why && !(WIFEXITED(nstatus) && WEXITSTATUS(nstatus) == 0)) {
		static char nwhy[64];
		snprintf(nwhy, sizeof(nwhy), "the nested mount namespace (status 0x%x)", nstatus);
		why = nwhy;
	}
	for (int i = 0; i < 4 && pivots[i]; i++) {
		int pstatus = -1;
		kill(pivots[i], SIGTERM);
		waitpid(pivots[i], &pstatus, 0);
		if (!why && !(WIFEXITED(pstatus) && WEXITSTATUS(pstatus) == 0)) {
			static char pwhy[80];
			snprintf(pwhy, sizeof(pwhy), "the further nested mount namespace %d (status 0x%x)",
				 i, pstatus);
			why = pwhy;
		}
	}
	if (!why) {
		/* Read as written, and watched still: a write through it is an event of watch 1. */
		char nb[16] = {0};
		struct inotify_event ev;
		if (pread(ntf, nb, 12, 0) != 12 || memcmp(nb, "nested tmpfs", 12) ||
		    pwrite(ntf, "N", 1, 0) != 1 || read(ify, &ev, sizeof(ev)) != sizeof(ev) ||
		    ev.wd != 1 || !(ev.mask & IN_MODIFY))
			why = "the file of the nested tmpfs held here, or its watch";
	}
	/* The names the restore gave the deleted files of gone_main are gone again. */
	if (!why && more) {
		for (int i = 1; i <= 2 && !why; i++) {
			char d[16];
			snprintf(d, sizeof(d), "/gz/%d", i);
			DIR *dir = opendir(d);
			struct dirent *e;
			while (dir && (e = readdir(dir)))
				if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
					why = "a name left behind where gone_main's files were";
			if (!dir)
				why = "gone_main's directories";
			else
				closedir(dir);
		}
	}
	/* The console is the pty: what is written there comes out of its master. */
	if (!why && more) {
		struct stat cs, ps;
		int con = open("/console", O_RDWR | O_NOCTTY), seen = 0;
		if (con >= 0 && !fstat(con, &cs) && !fstat(pts, &ps) && cs.st_rdev == ps.st_rdev &&
		    write(con, "C", 1) == 1) {
			/* (After the echo of what was typed, which the master has not read.) */
			struct pollfd pf = {.fd = ptm, .events = POLLIN};
			char got[64];
			for (int i = 0; i < 10 && !seen && poll(&pf, 1, 500) == 1; i++) {
				ssize_t n = read(ptm, got, sizeof(got));
				seen = n > 0 && memchr(got, 'C', n) != NULL;
			}
		}
		if (!seen)
			why = "the console bound from the pty";
		close(con);
	}
	/* What hides the tmpfs goes: it shows its file again. */
	if (!why && more &&
	    (!read_is("/hd/a/top2", "top2") || umount2("/hd/a", 0) || !read_is("/hd/a/top", "top") ||
	     umount2("/hd/a", 0) || !read_is("/hd/a/b/f", "hidden")))
		why = "the overmounted tmpfs (its file, or the two stacked that hide it)";
	/* mntns_remap: "rc" read through the visible bind; a mount made on it shows on its hidden
	 * peer too (two mounts at that place). */
	if (!why && more &&
	    (!read_is("/rm/1/top", "r2") || !read_is("/rm/1/a/c/f", "remap") ||
	     mounts_at("/rm/1/a/c") != 2 || mkdir("/rm/1/a/d", 0755) ||
	     mount("rd", "/rm/1/a/d", "tmpfs", 0, "size=1m") || mounts_at("/rm/1/a/d") != 2))
		why = "zdtm's mntns_remap (what the moved tmpfs hides, or the sharing under it)";
	printf(why ? "FAIL %s\n" : "PASS mntns\n", why);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	signal(SIGTERM, on_term);
	if (!strcmp(argv[1], "inside"))
		return inside_main(atoi(argv[2]));
	int p[2];
	if (pipe(p) || unshare(CLONE_NEWNS | CLONE_NEWPID))
		DIE("unshare");
	pid_t init = fork();
	if (init < 0)
		DIE("fork");
	if (!init) {
		close(p[0]);
		setsid();
		_exit(init_main(argv[1], argv[2], p[1]));
	}
	close(p[1]);
	char c;
	char out[4096];
	snprintf(out, sizeof(out), "%s/out.log", argv[1]);
	FILE *f = fopen(out, "a");
	if (read(p[0], &c, 1) != 1) {
		fprintf(f, "FAIL setup (the init died)\n");
		return 1;
	}
	fprintf(f, "ready pid=%d\n", init);
	fclose(f);
	return 0;
}
