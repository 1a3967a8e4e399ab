"""Runs a command with a fresh pseudo-terminal's slave as its stdin, stdout and stderr (not its
controlling terminal: opened O_NOCTTY), keeping the master open and draining it until killed.
Appends "slave=PATH" to REPORT first, and "exit=CODE" when the command ends.

    python3 pty_hold.py REPORT CMD ARGS...
"""
import os
import select
import subprocess
import sys

master, slave = os.openpty()
with open(sys.argv[1], "a") as f:
    f.write(f"slave={os.ttyname(slave)}\n")
p = subprocess.Popen(sys.argv[2:], stdin=slave, stdout=slave, stderr=slave)
code = p.wait()
with open(sys.argv[1], "a") as f:
    f.write(f"exit={code}\n")
while True:
    r, _, _ = select.select([master], [], [], 1)
    if r:
        try:
            os.read(master, 4096)
        except OSError:
            pass
