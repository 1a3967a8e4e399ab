/*
 * Victim: an inotify instance watching a directory (wd 1) and a file (wd 3; wd 2 was removed).
 * On SIGTERM it creates a file in the directory and writes to the watched file, and checks
 * that the events arrive with the right watch numbers; it prints PASS or FAIL.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

int main(int argc, char **argv)
{
	char dir[512], file[512], other[512], buf[4096];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(dir, sizeof(dir), "%s/watched", argv[2]);
	snprintf(file, sizeof(file), "%s/file", argv[2]);
	snprintf(other, sizeof(other), "%s/other", argv[2]);
	mkdir(dir, 0700);
	close(open(file, O_CREAT | O_WRONLY, 0600));
	close(open(other, O_CREAT | O_WRONLY, 0600));
	int in = inotify_init1(IN_NONBLOCK);
	int w1 = inotify_add_watch(in, dir, IN_CREATE);
	int w2 = inotify_add_watch(in, other, IN_MODIFY);
	int w3 = inotify_add_watch(in, file, IN_MODIFY);
	inotify_rm_watch(in, w2);
	while (read(in, buf, sizeof(buf)) > 0) /* the IN_IGNORED of w2 */
		;
	signal(SIGTERM, on_term);
	snprintf(buf, sizeof(buf), "ready pid=%d in=%d w1=%d w3=%d\n", getpid(), in, w1, w3);
	write(out, buf, strlen(buf));
	while (!term)
		pause();
	char created[600];
	snprintf(created, sizeof(created), "%s/new", dir);
	close(open(created, O_CREAT | O_WRONLY, 0600));
	int f = open(file, O_WRONLY);
	write(f, "x", 1);
	close(f);
	usleep(50000);
	int n = read(in, buf, sizeof(buf)), seen1 = 0, seen3 = 0;
	for (int off = 0; off < n;) {
		struct inotify_event *e = (struct inotify_event *)(buf + off);
		seen1 |= e->wd == w1 && (e->mask & IN_CREATE) && !strcmp(e->name, "new");
		seen3 |= e->wd == w3 && (e->mask & IN_MODIFY);
		off += sizeof(*e) + e->len;
	}
	write(out, seen1 && seen3 ? "PASS inotify\n" : "FAIL inotify\n", 13);
	return 0;
}
