"""A tritonserver and an adapter over one model repository, on free loopback ports (tests and benchmarks)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from launcher.processes import free_port, start_adapter, stop, wait_http
from launcher.supervisor import Supervisor
from launcher.tritonserver import TritonPorts, TritonServer, new_admin_key

# Explicit model control, every model loaded at start: the supervisor reloads a model whose stub died.
SUPERVISED = ("--model-control-mode=explicit", "--load-model=*")


@dataclass
class Stack:
    """A running tritonserver and adapter over one model repository."""

    repository: Path
    triton: TritonServer
    adapter_url: str
    adapter_log: Path
    adapter: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    supervisor: Supervisor | None = field(default=None, repr=False)

    @property
    def grpc_url(self) -> str:
        return self.triton.grpc_url


@contextmanager
def running_stack(repository: Path, workdir: Path, *adapter_args: str) -> Iterator[Stack]:
    """Start a supervised tritonserver and the adapter, wait until both are ready, and stop both on exit."""
    triton = TritonServer(
        repository, workdir, TritonPorts(free_port(), free_port(), free_port()), extra_args=SUPERVISED
    )
    supervisor = Supervisor(triton)
    adapter = None
    try:
        triton.start()
        triton.wait_ready(240)
        supervisor.start()
        port = free_port()
        log = workdir / "adapter.log"
        adapter = start_adapter(port, triton.grpc_url, log, *adapter_args, admin_key=triton.admin_key)
        wait_http(f"http://127.0.0.1:{port}/health/ready", adapter, timeout=120)
        yield Stack(repository, triton, f"http://127.0.0.1:{port}", log, adapter, supervisor)
    finally:
        supervisor.stop()
        stop(adapter)
        triton.stop()


@dataclass
class Replicas:
    """Tritonservers on the same gRPC port of several loopback addresses, and the adapter over all of them."""

    servers: list[TritonServer]
    adapter_url: str
    adapter: subprocess.Popen[bytes] = field(repr=False)


@contextmanager
def running_replicas(
    repository: Path, workdir: Path, addresses: tuple[str, ...] = ("127.0.0.1", "127.0.0.2"), *adapter_args: str
) -> Iterator[Replicas]:
    """Replicas behind one target (`ipv4:a:port,b:port`, what a headless Service's name resolves to)."""
    grpc = free_port()
    key = new_admin_key()  # one for all replicas: the adapter lists models on each of them
    servers = [
        TritonServer(
            repository,
            workdir / f"replica-{i}",
            TritonPorts(free_port(), grpc, free_port()),
            extra_args=SUPERVISED,
            address=address,
            admin_key=key,
        )
        for i, address in enumerate(addresses)
    ]
    adapter = None
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(240)
        port = free_port()
        target = "ipv4:" + ",".join(f"{address}:{grpc}" for address in addresses)
        adapter = start_adapter(port, target, workdir / "adapter-replicas.log", *adapter_args, admin_key=key)
        wait_http(f"http://127.0.0.1:{port}/health/ready", adapter)
        yield Replicas(servers, f"http://127.0.0.1:{port}", adapter)
    finally:
        stop(adapter)
        for server in servers:
            server.stop()
