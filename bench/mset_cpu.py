#!/usr/bin/env python3
"""One MSET of N 64-byte arguments, streamed in writes of 256 arguments, against a server this
script starts; prints the reply and the server's CPU seconds for it (utime + stime from
/proc). It shows whether a server parses a request that arrives in many reads once, or again
from its start at each read (issue #22: kv took 9.6 s for a million arguments, redis-server 0.3).

    python3 bench/mset_cpu.py 1000000 6391 target/release/examples/kv 127.0.0.1:6391
    python3 bench/mset_cpu.py 1000000 6392 redis-server --port 6392 --bind 127.0.0.1 --save ''
"""
import os
import socket
import subprocess
import sys
import time


def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    n, port, cmd = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("the server did not start")
                time.sleep(0.05)
        before = cpu(server.pid)
        arg = b"$64\r\n" + b"a" * 64 + b"\r\n"
        s.sendall(b"*%d\r\n$4\r\nMSET\r\n" % (n + 1))
        left = n
        while left > 0:
            k = min(256, left)
            s.sendall(arg * k)
            left -= k
        s.settimeout(120)
        print(s.recv(100), "server CPU s:", round(cpu(server.pid) - before, 2))
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
