"""A TCP connection waiting for the answer to its SYN: a listener, and a client whose SYN an
iptables rule drops. argv: OUT. On SIGTERM the rule goes, the connection completes (the SYN
the restore sent again is retransmitted), and a byte goes each way: PASS or FAIL.

    python3 synsent.py OUT
"""
import os
import signal
import socket
import subprocess
import sys

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
port = listener.getsockname()[1]
rule = ["-t", "filter", "-p", "tcp", "--dport", str(port), "-j", "DROP"]
subprocess.run(["iptables", "-w", "-A", "INPUT", *rule], check=True)
client = socket.socket()
client.setblocking(False)
try:
    client.connect(("127.0.0.1", port))
except BlockingIOError:
    pass
term = False


def on_term(_sig, _frame):
    global term
    term = True


signal.signal(signal.SIGTERM, on_term)
with open(sys.argv[1], "a") as f:
    f.write(f"ready pid={os.getpid()} port={port}\n")
while not term:
    signal.pause()
subprocess.run(["iptables", "-w", "-D", "INPUT", *rule], check=True)
listener.settimeout(5)
verdict = "FAIL"
try:
    server, _ = listener.accept()
    server.settimeout(5)
    client.setblocking(True)
    client.settimeout(5)
    client.send(b"c")
    got = server.recv(1)
    server.send(b"s")
    back = client.recv(1)
    verdict = "PASS" if got == b"c" and back == b"s" else f"FAIL {got!r} {back!r}"
except OSError as e:
    verdict = f"FAIL {e}"
with open(sys.argv[1], "a") as f:
    f.write(f"{verdict} synsent\n")
