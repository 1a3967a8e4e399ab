"""Runs a command on a new pseudo-terminal (its stdio and controlling tty) and keeps the master
open, draining it, until killed. Appends to REPORT "ready pid=PID" at start and "exit=CODE"
when the command ends (the terminal stays, for whatever else holds it). What the terminal
shows is appended to REPORT.tty. What is appended to REPORT.in is typed into the terminal.

    python3 pty_run.py REPORT CMD ARGS...
"""
import os
import pty
import select
import sys

pid, master = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])


def report(line):
    with open(sys.argv[1], "a") as f:
        f.write(line + "\n")


report(f"ready pid={pid}")
running = True
typed = 0
while True:
    try:
        with open(sys.argv[1] + ".in", "rb") as f:
            f.seek(typed)
            more = f.read()
        if more:
            os.write(master, more)
            typed += len(more)
    except OSError:
        pass
    r, _, _ = select.select([master], [], [], 0.1)
    if r:
        try:
            data = os.read(master, 4096)
            if not data:
                break
            with open(sys.argv[1] + ".tty", "ab") as f:
                f.write(data)
        except OSError:
            if not running:
                break
    if running:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            running = False
            report(f"exit={os.waitstatus_to_exitcode(status)}")
