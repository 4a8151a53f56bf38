"""The torch.distributed process group of a training run, listening on nothing beyond loopback.

What a training process can listen on, and what this module does about each:

- The c10d store (rendezvous key-value store). A single process (no RANK/WORLD_SIZE in the
  environment) uses an in-memory `HashStore`: with nobody to meet there is no socket and no file.
  Several processes on one machine (RANK/WORLD_SIZE set and MASTER_ADDR a loopback address):
  - under `torchrun` (TORCHELASTIC_USE_AGENT_STORE=True) the torchrun agent hosts the store and
    every rank is a client, so our processes do not listen for it. The agent itself binds its
    TCPStore server to the wildcard address (all interfaces) on MASTER_PORT whatever MASTER_ADDR
    says, and torchrun has no option to change that: firewall MASTER_PORT, or launch the ranks
    with the `deepspeed` launcher or plain processes, if that matters on the machine;
  - otherwise (the `deepspeed` launcher, hand-started processes) rank 0 hosts the store. torch's
    `env://` would let TCPStore create and bind the server socket itself, again on the wildcard
    address; instead rank 0 binds a socket to MASTER_ADDR:MASTER_PORT itself and hands it to the
    TCPStore (`master_listen_fd`), and the other ranks connect to it.
- gloo (and NCCL's bootstrap) open a listening socket per process group on the interface they
  pick; gloo's default is the address the hostname resolves to, a LAN address on most machines.
  On one machine GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME are set to the loopback interface,
  unless the environment already sets them.

Multi-node (MASTER_ADDR is not a loopback address): nothing is changed and `env://` does what
torch does: the store on MASTER_PORT listens on all interfaces, gloo/NCCL on the interface they
pick. Such a launch must set GLOO_SOCKET_IFNAME (CPU) or NCCL_SOCKET_IFNAME (CUDA) to the
cluster-internal interface and firewall MASTER_PORT and that interface from outside the cluster.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import MutableMapping

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

IFNAME_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
_IFF_LOOPBACK = 0x8


def free_localhost_port() -> int:
    """A currently free TCP port on 127.0.0.1 (never binds other interfaces)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_device() -> torch.device:
    """CUDA when present (and DS_ACCELERATOR does not say cpu), else CPU."""
    if torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") != "cpu":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def loopback_literal(host: str) -> str | None:
    """The loopback IP literal `host` names ("localhost" -> 127.0.0.1), or None if it is not one.

    Only literals and "localhost" count: a host *name* that happens to resolve to 127.0.1.1 on
    the master (a Debian /etc/hosts habit) may be the master's real address to the other nodes.
    """
    if host.strip().lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return None
    return str(address) if address.is_loopback else None


def loopback_interface() -> str | None:
    """Name of this machine's loopback network interface ("lo" on Linux, "lo0" on macOS)."""
    names = [name for _, name in socket.if_nameindex()]
    for name in names:  # Linux: the interface flags say which one is the loopback
        try:
            if int((Path("/sys/class/net") / name / "flags").read_text(), 16) & _IFF_LOOPBACK:
                return name
        except (OSError, ValueError):
            continue
    return next((name for name in ("lo", "lo0") if name in names), None)


def pin_to_loopback(environ: MutableMapping[str, str]) -> None:
    """Make gloo and NCCL listen on the loopback interface, unless `environ` already chooses one."""
    interface = loopback_interface()
    if interface is None:  # pragma: no cover - every supported OS has a loopback interface
        return
    for variable in IFNAME_VARIABLES:
        environ.setdefault(variable, interface)


def loopback_tcp_store(host: str, port: int, rank: int, world_size: int) -> dist.TCPStore:
    """The run's TCPStore on `host:port` (a loopback literal): rank 0 serves it on a socket bound to
    that address only, the other ranks connect to it."""
    if rank != 0:
        return dist.TCPStore(host, port, world_size, False, default_pg_timeout)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as err:
        listener.close()
        raise RuntimeError(f"cannot listen on MASTER_ADDR:MASTER_PORT = {host}:{port} ({err}); "
                           "choose a free MASTER_PORT") from None
    fd = listener.detach()  # the TCPStore server owns the descriptor from here on
    try:
        return dist.TCPStore(host, port, world_size, True, default_pg_timeout, master_listen_fd=fd)
    except BaseException:
        os.close(fd)
        raise


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world_size); initialises torch.distributed if nobody did yet (see module docstring).

    A process group that is already initialised is reused as it is.
    """
    env = os.environ
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if "RANK" in env and "WORLD_SIZE" in env:  # torchrun / deepspeed launcher / hand-started
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
            host = loopback_literal(env.get("MASTER_ADDR", ""))
            if host is None:  # multi-node: the launch configures interfaces and ports
                dist.init_process_group(backend, init_method="env://")
            else:
                pin_to_loopback(env)
                if env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":  # torchrun's agent serves
                    dist.init_process_group(backend, init_method="env://")
                else:
                    store = loopback_tcp_store(host, int(env["MASTER_PORT"]), rank, world)
                    dist.init_process_group(backend, store=store, rank=rank, world_size=world)
        else:
            pin_to_loopback(env)
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    # DeepSpeed insists on LOCAL_RANK even for a single process.
    env.setdefault("LOCAL_RANK", "0")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size()
