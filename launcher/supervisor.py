"""Keep one tritonserver serving through faults, without an operator.

Triton does not restart a Python-backend stub that dies (a `kill -9`, the kernel's OOM killer): every
later call of its model fails with "Stub process … is not healthy" while the server still says it is
ready. The supervisor watches the server's stub processes and, when one dies, reloads its model
through the repository API (explicit model control): an unload, then at once a load, which starts a
new stub; the ensembles on top come back with it. It also removes the shared-memory region each dead
stub leaves in /dev/shm, and restarts the server itself when it exits (`restart=True`, as a
container's restart policy would).

Measured on this machine (`python -m bench.soak`): see the README's reliability section.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from contract import ADMIN_HEADER
from launcher.direct import DIRECT
from launcher.shm import SHM, Stub, remove_orphan_regions, stubs_of
from launcher.tritonserver import TritonServer

log = logging.getLogger("launcher.supervisor")


@dataclass
class Supervisor:
    """Watches one `TritonServer` from a thread; `start()` after the server is ready, `stop()` before stopping it."""

    server: TritonServer
    poll_s: float = 1.0
    restart: bool = False
    events: list[str] = field(default_factory=list)  # what it did, for logs and tests
    _known: dict[int, Stub] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._known = self._stubs()
        self._thread = threading.Thread(target=self._run, name="triton-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _note(self, what: str) -> None:
        log.warning("%s", what)
        self.events.append(what)

    def _stubs(self) -> dict[int, Stub]:
        process = self.server.process
        return stubs_of(process.pid) if process is not None and process.poll() is None else {}

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # the watch must outlive any one failed repair
                log.exception("supervisor check failed")

    def check(self) -> None:
        """One round: a dead server is restarted, a dead stub's model reloaded, its region removed."""
        process = self.server.process
        if process is None or self._stop.is_set():
            return
        if process.poll() is not None:
            if not self.restart:
                return
            self._note(f"tritonserver exited with {process.returncode}; starting it again")
            for stub in self._known.values():  # the dead server's regions
                (SHM / stub.region).unlink(missing_ok=True)
            remove_orphan_regions(min_age_s=2.0)
            self.server.start()
            self.server.wait_ready(600)
            self._known = self._stubs()
            return
        live = self._stubs()
        dead = [stub for pid, stub in self._known.items() if pid not in live]
        self._known = live
        for model in sorted({stub.model for stub in dead}):
            self._note(f"the stub of {model} died; reloading the model")
            self._reload(model)
        for stub in dead:
            (SHM / stub.region).unlink(missing_ok=True)
        if dead:
            self._known = self._stubs()

    def _reload(self, model: str, timeout_s: float = 120.0) -> None:
        """Unload, then load at once: a plain load of a loaded model is a no-op, and the unload of a model
        whose stub died can take from 20 s to forever (measured), while the load starts a new instance
        beside it right away; the stuck one goes with the server."""
        base = f"http://{self.server.http_url}/v2/repository"
        self._post(f"{base}/models/{model}/unload")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._state(base, model) == "READY":
            time.sleep(0.1)
        self._post(f"{base}/models/{model}/load", timeout=timeout_s)
        self._note(f"{model} reloaded: {self._state(base, model)}")

    def _request(self, url: str) -> urllib.request.Request:
        """A repository-API call, with the admin key the server restricts that API to."""
        headers = {"Content-Type": "application/json", ADMIN_HEADER: self.server.admin_key}
        return urllib.request.Request(url, data=b"{}", method="POST", headers=headers)

    def _post(self, url: str, timeout: float = 30.0) -> None:
        try:
            with DIRECT.open(self._request(url), timeout=timeout):
                pass
        except urllib.error.HTTPError as exc:
            log.warning("%s answered %d: %s", url, exc.code, exc.read()[:300])

    def _state(self, base: str, model: str) -> str:
        with DIRECT.open(self._request(f"{base}/index"), timeout=10) as r:
            index = json.loads(r.read())
        return next((m.get("state", "") for m in index if m["name"] == model), "")
