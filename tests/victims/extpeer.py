"""A unix socket whose peer stays outside the dumped tree, and a file given back by the restore.

    python3 extpeer.py OUT FILE

The parent (outside the tree) makes a socketpair, forks the child (the tree: a session of its
own) and sends it "hello". The child opens FILE for appending, reports "ready pid=CHILD
sock=FD file=FD", and on SIGTERM reads "hello" then expects the end of the stream (its peer
is gone: --external unix[INO]), writes "written\\n" through its FILE descriptor, and reports.
"""
import os
import signal
import socket
import sys
import time

out, path = sys.argv[1], sys.argv[2]
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
pid = os.fork()
if pid == 0:
    a.close()
    os.setsid()
    f = os.open(path, os.O_WRONLY | os.O_APPEND)
    term = False

    def on_term(_sig, _frame):
        global term
        term = True

    signal.signal(signal.SIGTERM, on_term)
    with open(out, "a") as o:
        o.write(f"ready pid={os.getpid()} sock={b.fileno()} file={f}\n")
    while not term:
        signal.pause()
    b.setblocking(False)
    try:
        got = b.recv(100)
        end = b.recv(100)
    except BlockingIOError:
        got, end = b"", None
    os.write(f, b"written\n")
    verdict = "PASS" if got == b"hello" and end == b"" else f"FAIL {got!r} {end!r}"
    with open(out, "a") as o:
        o.write(f"{verdict} extpeer\n")
    os._exit(0)
b.close()
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the dumped child goes at once, not a zombie
a.send(b"hello")
time.sleep(1000)
