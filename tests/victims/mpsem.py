"""
Python multiprocessing: a semaphore (a deleted /dev/shm/sem.* file, mapped shared) and a value
in shared memory, used by a parent and a child process. argv: OUT. On SIGTERM the parent checks
that the semaphore and the value kept their state and are still shared with the child.
"""
import multiprocessing as mp
import os
import signal
import sys
import time


def child(sem, val, go):
    go.wait()
    with val.get_lock():
        val.value += 1
    sem.release()
    time.sleep(60)


def main():
    out = open(sys.argv[1], "a", buffering=1)
    sem = mp.Semaphore(3)
    sem.acquire()
    sem.acquire()  # value 1
    val = mp.Value("i", 41)
    go = mp.Event()
    p = mp.Process(target=child, args=(sem, val, go), daemon=True)
    p.start()
    term = []
    signal.signal(signal.SIGTERM, lambda *_: term.append(1))
    maps = open(f"/proc/{os.getpid()}/maps").read()
    deleted = "/dev/shm/sem." in maps and "(deleted)" in maps
    out.write(f"ready pid={os.getpid()} child={p.pid} deleted={int(deleted)}\n")
    while not term:
        signal.pause()
    ok = sem.get_value() == 1
    go.set()  # the child adds one and releases
    time.sleep(0.5)
    ok = ok and val.value == 42 and sem.get_value() == 2
    out.write("PASS mpsem\n" if ok else f"FAIL mpsem value={val.value} sem={sem.get_value()}\n")
    p.kill()


if __name__ == "__main__":
    main()
