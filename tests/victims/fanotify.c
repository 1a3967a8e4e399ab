/*
 * A fanotify group (non-blocking, notification class) with an inode mark on DIR/watched
 * (modify, close-write; access ignored, surviving modify) and a mount mark on DIR's mount (open
 * of directories). argv: OUT DIR. On SIGTERM its fdinfo must show the same flags and marks,
 * and a write to DIR/watched must come out of it as an event on that file.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

/* The fanotify lines of our fdinfo of `fd`. */
static void marks(int fd, char *buf, size_t size)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	buf[0] = 0;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "fanotify", 8) && strlen(buf) + strlen(line) < size)
			strcat(buf, line);
	if (f)
		fclose(f);
}

int main(int argc, char **argv)
{
	char msg[512], file[512], before[4096], after[4096];
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(file, sizeof(file), "%s/watched", argv[2]);
	close(open(file, O_CREAT | O_WRONLY, 0644));
	int fa = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
	if (fa < 0 ||
	    fanotify_mark(fa, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, file) ||
	    fanotify_mark(fa, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY,
			  FAN_ACCESS, AT_FDCWD, file) ||
	    fanotify_mark(fa, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN | FAN_ONDIR, AT_FDCWD, argv[2]))
		return 2;
	marks(fa, before, sizeof(before));
	signal(SIGTERM, on_term);
	snprintf(msg, sizeof(msg), "ready pid=%d\n", getpid());
	write(out, msg, strlen(msg));
	while (!term)
		pause();

	const char *why = NULL;
	marks(fa, after, sizeof(after));
	char buf[8192];
	while (read(fa, buf, sizeof(buf)) > 0)
		; /* what came meanwhile (the restore opened files on the mount) */
	if (strcmp(before, after))
		why = "its fdinfo differs";
	else if (!(fcntl(fa, F_GETFL) & O_NONBLOCK))
		why = "it blocks";
	if (!why) {
		int w = open(file, O_WRONLY);
		write(w, "x", 1);
		close(w);
		int seen = 0;
		struct timespec t0, t;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		while (!seen) {
			ssize_t n = read(fa, buf, sizeof(buf));
			for (char *p = buf; n > 0 && p < buf + n;) {
				struct fanotify_event_metadata *m = (void *)p;
				char link[64], target[512] = {0};
				snprintf(link, sizeof(link), "/proc/self/fd/%d", m->fd);
				if (m->fd >= 0 && readlink(link, target, sizeof(target) - 1) > 0 &&
				    !strcmp(target, file) && (m->mask & FAN_MODIFY))
					seen = 1;
				if (m->fd >= 0)
					close(m->fd);
				p += m->event_len;
			}
			clock_gettime(CLOCK_MONOTONIC, &t);
			if (t.tv_sec - t0.tv_sec > 2)
				break;
		}
		if (!seen)
			why = "no event for a write to the watched file";
	}
	snprintf(msg, sizeof(msg), why ? "FAIL fanotify: %s\n" : "PASS fanotify\n", why);
	write(out, msg, strlen(msg));
	if (why) {
		write(out, before, strlen(before));
		write(out, after, strlen(after));
	}
	return 0;
}
