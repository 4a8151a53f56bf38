"""The TCP sockets a process tree listens on, read from /proc (Linux; psutil is not a dependency).

/proc/<pid>/net/tcp{,6} list every socket of the process's network namespace; only those whose
inode is one of the process's own file descriptors (/proc/<pid>/fd -> socket:[inode]) are its own.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

TCP_LISTEN = "0A"


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (by parent pid in /proc/<p>/stat)."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        children = [p for p, parent in parent_of.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)  # the kernel prints each 32-bit word in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening(pids: list[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state owned by one of `pids`."""
    found = []
    for pid in pids:
        try:
            inodes = _socket_inodes(pid)
            tables = [Path(f"/proc/{pid}/net/{name}").read_text() for name in ("tcp", "tcp6")]
        except OSError:  # exited meanwhile
            continue
        for table in tables:
            for line in table.splitlines()[1:]:
                fields = line.split()
                if fields[3] == TCP_LISTEN and int(fields[9]) in inodes:
                    address, port = fields[1].split(":")
                    found.append((pid, _address(address), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback
