/**
 * The text `criu --help` prints.
 *
 * @module
 */

/** Usage and options, grouped as criu groups them. */
export const USAGE = `
Usage:
  criu dump -t PID [<options>]
  criu restore [<options>]
  criu check [--feature FEAT]
  criu show [FILE]

Commands:
  dump           checkpoint a process/tree identified by pid
  restore        restore a process/tree
  check          checks whether the kernel support is up-to-date
  show           print the images of a directory (or one image file) as JSON

Most of the true / false long options (the ones without arguments) can be
prefixed with --no- to negate the option (example: --display-stats and
--no-display-stats). Long options may be shortened to any unambiguous prefix.

Dump/Restore options:

* Generic:
  -t|--tree PID         checkpoint a process tree identified by PID
  -d|--restore-detached detach after restore
  -s|--leave-stopped    leave tasks in stopped state after checkpoint (or restore)
  -R|--leave-running    leave tasks in running state after checkpoint
  -D|--images-dir DIR   directory for image files
     --pidfile FILE     write root task pid to FILE (relative to the work dir)
  -W|--work-dir DIR     directory to write logs/pidfiles to, and action scripts' cwd
                        (if not specified, value of --images-dir is used)
     --timeout NUM      seconds to wait for the tree to freeze (default 10)
     --network-lock METHOD  nftables (default), iptables or skip
     --action-script FILE   run FILE at pre-dump, post-dump, pre-restore,
                        post-restore, pre-resume and post-resume
     --config FILE      read options from FILE (instead of the default files)
     --no-default-config    do not read /etc/criu/default.conf, ~/.criu/default.conf

* Special resources support:
     --tcp-established  checkpoint/restore established TCP connections
     --skip-in-flight   skip (ignore) in-flight TCP connections
     --tcp-close        restore established TCP connections closed
  -j|--shell-job        allow to dump and restore shell jobs
  -l|--file-locks       handle file locks, for safety, only used for container
     --link-remap       accepted (deleted files are carried in the images)
     --ghost-limit SIZE limit max size of deleted file contents inside image

* Logging:
  -o|--log-file FILE    log file name (relative to the work dir)
     --log-pid          accepted (one log file)
  -v[v...]|-vNUM        increase verbosity, or set it: 0 none, 1 errors,
                        2 warnings (default), 3 info, 4 debug
     --display-stats    print out dump/restore stats

Check options:
  --feature FEAT        check a particular feature
  --extra, --experimental, --all  check more features

Other options:
  -h|--help             show this text
  -V|--version          show version
`;
