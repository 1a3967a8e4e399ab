#!/usr/bin/env bash
# The main job, end to end: start a process, checkpoint it (it is killed), look at the images,
# restore it, and watch it continue where it stopped, under the same PID.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
criu() { bin/criu "$@"; }

work=$(mktemp -d /tmp/deno-criu-demo.XXXXXX)
gcc -O1 -o "$work/counter" tests/victims/counter.c
setsid -f "$work/counter" "$work/count.log" </dev/null >/dev/null 2>&1
sleep 1.2
pid=$(pgrep -n -f "$work/counter")
echo "== a process counting in its memory (pid $pid):"
tail -n 3 "$work/count.log"

mkdir "$work/images"
echo "== criu dump -t $pid -D $work/images --display-stats"
criu dump -t "$pid" -D "$work/images" -o dump.log -v4 --display-stats
sleep 0.5
if kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat") != Z ]]; then
  echo "demo: the process is still running after the dump" >&2
  exit 1
fi
echo "== the process is gone; its images (mode 0600, CRIU format):"
ls -l "$work/images"
echo "== crit (CRIU's own tool) reads them, e.g. the process tree:"
crit decode -i "$work/images/pstree.img" --pretty
echo "== and the project's own viewer (criu show), the task's registers:"
criu show "$work/images/core-$pid.img" | grep -E '"(ip|sp|ax)"' | head -3
last=$(tail -n 1 "$work/count.log")
echo "== last line before the dump: $last"
# The killed process was an orphan: PID 1 reaps it within a few seconds, then its PID is free.
for _ in $(seq 100); do [[ -e /proc/$pid ]] || break; sleep 0.1; done

if criu restore -D "$work/images" -d --pidfile "$work/restored.pid" -o restore.log -v4 2>"$work/restore.err"; then
  echo "== criu restore -D $work/images -d: restored as pid $(cat "$work/restored.pid")"
  sleep 1.2
  echo "== it continues counting from where it stopped:"
  grep -A 5 -F "$last" "$work/count.log" | head -6
  kill -9 "$(cat "$work/restored.pid")"
else
  echo "== restore: $(tail -n 1 "$work/restore.err")"
fi
echo "== work directory: $work"
