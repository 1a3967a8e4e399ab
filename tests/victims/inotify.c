/*
 * Victim: an inotify instance watching a directory (wd 1), a file (wd 3; wd 2 was removed) and
 * a file in the directory that it holds open and deleted (wd 4). On SIGTERM it creates a file in
 * the directory, writes to both files and closes the deleted one, and checks that exactly the
 * events this makes arrive, with the right watch numbers (none from the checkpoint or the
 * restore); it prints PASS or FAIL.
 * A third argument: "plain" leaves the deleted file out (CRIU 4.2 restores a watch on one only
 * through its ghost's name, which queues events and ends the watch); for the dump to refuse,
 * "queued" leaves an event unread and "unheld" closes the deleted file on SIGUSR1 (someone
 * outside the tree holding it then).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t term, usr1;
static void on_term(int sig) { (void)sig; term = 1; }
static void on_usr1(int sig) { (void)sig; usr1 = 1; }

int main(int argc, char **argv)
{
	char dir[512], file[512], other[512], gone[600], buf[4096];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(dir, sizeof(dir), "%s/watched", argv[2]);
	snprintf(file, sizeof(file), "%s/file", argv[2]);
	snprintf(other, sizeof(other), "%s/other", argv[2]);
	mkdir(dir, 0700);
	close(open(file, O_CREAT | O_WRONLY, 0600));
	close(open(other, O_CREAT | O_WRONLY, 0600));
	int in = inotify_init1(IN_NONBLOCK);
	int w1 = inotify_add_watch(in, dir, IN_CREATE | IN_DELETE);
	int w2 = inotify_add_watch(in, other, IN_MODIFY);
	int w3 = inotify_add_watch(in, file, IN_MODIFY);
	const char *mode = argc > 3 ? argv[3] : "";
	int plain = !strcmp(mode, "plain");
	snprintf(gone, sizeof(gone), "%s/%s", plain ? argv[2] : dir, "gone");
	int g = open(gone, O_CREAT | O_RDWR, 0600);
	write(g, "abc", 3);
	int w4 = plain ? 4 : inotify_add_watch(in, gone, IN_MODIFY | IN_CLOSE_WRITE);
	unlink(gone);
	inotify_rm_watch(in, w2);
	while (read(in, buf, sizeof(buf)) > 0) /* the IN_IGNORED of w2 */
		;
	if (!strcmp(mode, "queued"))
		write(g, "q", 1); /* an IN_MODIFY left unread */
	signal(SIGTERM, on_term);
	signal(SIGUSR1, on_usr1);
	snprintf(buf, sizeof(buf), "ready pid=%d in=%d w1=%d w3=%d w4=%d g=%d\n", getpid(), in,
		 w1, w3, w4, g);
	write(out, buf, strlen(buf));
	if (!strcmp(mode, "unheld")) {
		while (!usr1)
			pause();
		close(g);
		while (read(in, buf, sizeof(buf)) > 0) /* its IN_CLOSE_WRITE */
			;
		dprintf(out, "closed\n");
	}
	while (!term)
		pause();
	char created[600];
	snprintf(created, sizeof(created), "%s/new", dir);
	close(open(created, O_CREAT | O_WRONLY, 0600));
	int f = open(file, O_WRONLY);
	write(f, "x", 1);
	close(f);
	char back[4] = "";
	pread(g, back, 3, 0);
	write(g, "d", 1);
	close(g);
	usleep(50000);
	int n = read(in, buf, sizeof(buf)), seen1 = 0, seen3 = 0, seen4 = 0, other_events = 0;
	for (int off = 0; off < n;) {
		struct inotify_event *e = (struct inotify_event *)(buf + off);
		if (e->wd == w1 && e->mask == IN_CREATE && e->len && !strcmp(e->name, "new"))
			seen1 = 1;
		else if (e->wd == w3 && e->mask == IN_MODIFY)
			seen3 = 1;
		else if (e->wd == w4 &&
			 (e->mask == IN_MODIFY || e->mask == IN_CLOSE_WRITE || e->mask == IN_IGNORED))
			seen4 |= e->mask; /* IN_IGNORED: its last name died with the last close */
		else {
			dprintf(out, "unexpected event wd=%d mask=%#x name=%s\n", e->wd, e->mask,
				e->len ? e->name : "");
			other_events++;
		}
		off += sizeof(*e) + e->len;
	}
	int ok = seen1 && seen3 &&
		 seen4 == (plain ? 0 : IN_MODIFY | IN_CLOSE_WRITE | IN_IGNORED) && !other_events &&
		 !memcmp(back, "abc", 3);
	dprintf(out, "%s inotify (events: dir %d file %d deleted %#x, others %d)\n",
		ok ? "PASS" : "FAIL", seen1, seen3, seen4, other_events);
	return 0;
}
