"""A pty pair whose slave has an unread line ended by end-of-file (^D), which the images cannot
carry: the dump must refuse it and leave it as it was. argv: OUT. On SIGTERM the slave must read
b"abc" (the mark ends the line, unseen) and nothing more, the master its echo; then PASS or FAIL.

    python3 ptyeof.py OUT
"""
import os
import signal
import sys
import time

master, slave = os.openpty()
os.write(master, b"abc\x04")
time.sleep(0.05)
term = False


def on_term(_sig, _frame):
    global term
    term = True


signal.signal(signal.SIGTERM, on_term)
with open(sys.argv[1], "a") as f:
    f.write(f"ready pid={os.getpid()}\n")
while not term:
    signal.pause()
os.set_blocking(slave, False)
os.set_blocking(master, False)
got = []
for _ in range(2):
    try:
        got.append(os.read(slave, 100))
    except BlockingIOError:
        got.append(None)
try:
    echo = os.read(master, 100)
except BlockingIOError:
    echo = None
verdict = "PASS" if got == [b"abc", None] and echo == b"abc" else f"FAIL {got} {echo}"
with open(sys.argv[1], "a") as f:
    f.write(f"{verdict} ptyeof\n")
