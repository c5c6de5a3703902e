"""`python -m launcher serve [--model CHECKPOINT]`: export, start Triton and the adapter, wait for Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from launcher import default_model
from launcher.processes import port_holders, port_in_use, start_adapter, stop, wait_http
from launcher.supervisor import Supervisor
from launcher.tritonserver import TritonPorts, TritonServer

ROOT = Path(__file__).resolve().parent.parent
console = Console(stderr=True, soft_wrap=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m launcher serve", description=__doc__)
    ap.add_argument("command", choices=["serve"])
    ap.add_argument("--model", type=Path, help="checkpoint folder (default: the embedded all-MiniLM-L6-v2)")
    ap.add_argument("--name", help="served model name (default: the folder name)")
    ap.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    ap.add_argument("--host", default="127.0.0.1", help="address the adapter listens on (0.0.0.0: every interface)")
    ap.add_argument("--port", type=int, default=30000, help="adapter port")
    ap.add_argument("--triton-http-port", type=int, default=8000)
    ap.add_argument("--triton-grpc-port", type=int, default=8001)
    ap.add_argument("--triton-metrics-port", type=int, default=8002)
    ap.add_argument("--workers", type=int, help="adapter processes on the port (default: EMBED_WORKERS, else 1)")
    ap.add_argument("--reexport", action="store_true", help="export again even if the model is in the repository")
    ap.add_argument("--export-arg", action="append", default=[], help="extra flag for python -m export (repeatable)")
    return ap.parse_args(argv)


def ensure_exported(args: argparse.Namespace) -> str:
    from export.__main__ import main as export_main

    if args.model is None:
        if args.name:
            console.print(
                f"[red]--name {args.name} needs --model (MODEL=<checkpoint folder>)[/]: "
                f"the default model is served as {default_model.NAME}"
            )
            sys.exit(2)
        checkpoint, name = default_model.checkpoint(), default_model.NAME
        extra = ["--hf-id", default_model.HF_ID]
    else:
        checkpoint, name, extra = args.model.resolve(), args.name or args.model.resolve().name, []
    if (args.repository / name / "config.pbtxt").exists() and not args.reexport:
        again = "make serve REEXPORT=1" if os.environ.get("MAKELEVEL") else "--reexport"  # make sets MAKELEVEL
        console.print(f"[green]✓[/] {name} is already in {args.repository} ({again} to export it again)")
        return name
    code = export_main(
        [str(checkpoint), "--name", name, "--repository", str(args.repository), *extra, *args.export_arg]
    )
    if code != 0:
        sys.exit(code)
    return name


def ensembles_of(repository: Path, name: str) -> list[str]:
    """The model's ensembles: its own, plus its image ensemble when it has an image tower."""
    from google.protobuf import json_format

    from contract import EnsembleCard, parameters
    from export.repository import parse_config

    config = json_format.MessageToDict(
        parse_config(repository / name / "config.pbtxt"), preserving_proto_field_name=True
    )
    image = EnsembleCard.from_parameters(parameters(config)).image_ensemble
    return [name, image] if image else [name]


# SIGINT too: a job started in the background of a non-interactive shell inherits SIGINT ignored, and
# Python then installs no handler of its own. SIGHUP: the terminal closed, the SSH link dropped.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(*_: object) -> None:
    """The first stop signal stops the servers; the ones after it (make forwards SIGTERM to the whole
    process group, a second Ctrl-C) are ignored, so they cannot interrupt the cleanup."""
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    raise KeyboardInterrupt


def handle_stop_signals() -> None:
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, _interrupt)


def serve(args: argparse.Namespace) -> int:
    ports = TritonPorts(args.triton_http_port, args.triton_grpc_port, args.triton_metrics_port)
    busy = [p for p in (args.port, *vars(ports).values()) if port_in_use(p)]
    if busy:
        held = "; ".join(f"{p} by {', '.join(port_holders(p)) or 'a process this user cannot see'}" for p in busy)
        console.print(f"[red]ports in use:[/] {held}. Stop those, or pick others with PORT=… TRITON_HTTP_PORT=…")
        return 1
    name = ensure_exported(args)
    workdir = ROOT / "build" / f"serve-{args.port}"
    load = [f"--load-model={m}" for m in ensembles_of(args.repository, name)]
    triton = TritonServer(args.repository, workdir, ports, extra_args=("--model-control-mode=explicit", *load))
    supervisor = Supervisor(triton, restart=True)  # a dead stub's model is reloaded, a dead server restarted
    adapter = None
    handle_stop_signals()
    try:
        with console.status(f"starting tritonserver (log: {triton.log_path})"):
            triton.start()
            triton.wait_ready()
        supervisor.start()
        console.print(f"[green]✓[/] Triton ready: HTTP {ports.http}, gRPC {ports.grpc}, metrics {ports.metrics}")
        with console.status("starting the adapter"):
            workers = ("--workers", str(args.workers)) if args.workers else ()
            log, key = workdir / "adapter.log", triton.admin_key
            adapter = start_adapter(args.port, triton.grpc_url, log, *workers, host=args.host, admin_key=key)
            wait_http(f"http://127.0.0.1:{args.port}/health/ready", adapter)
        console.print(f"[green]✓[/] adapter ready on port {args.port} (log: {workdir / 'adapter.log'})\n")
        console.print(
            f"Try:\n  curl localhost:{args.port}/v1/embeddings -H 'Content-Type: application/json' \\\n"
            f'    -d \'{{"model":"{name}","input":["a cat","a kitten"]}}\'\n\nCtrl-C stops both servers.'
        )
        while True:  # tritonserver is the supervisor's to restart; the adapter exits only on a bug
            if adapter.poll() is not None:
                console.print(f"[red]the adapter exited with {adapter.returncode}[/]")
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("\nstopping…")
        return 0
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]failed:[/] {exc}")
        return 1
    finally:
        supervisor.stop()
        stop(adapter)
        triton.stop()
        console.print("stopped")


def main(argv: list[str] | None = None) -> int:
    return serve(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
