"""Mosquitto writes a log line for what every client does; the service reads it on a thread of its own, so an
event loop that stalls (a slow database call, a bug) never makes Mosquitto wait on a full pipe: clients are
still served, and what the service could not keep is dropped, counted and said."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from broker.mosquitto import supervisor as sup_mod
from broker.mosquitto.supervisor import MosquittoSupervisor
from tests.broker.conftest import wait_until
from tests.tui.conftest import free_port


def verbose_conf(tmp_path, port: int):
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stdout\nlog_type all\n")
    return conf


def pub(port: int, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "t", *args], input=input,
                          text=True, capture_output=True, timeout=20)


def test_a_stalled_event_loop_does_not_block_mosquitto(tmp_path, monkeypatch, broker_log):
    monkeypatch.setattr(sup_mod, "PIPE_SIZE", 4096)  # a pipe the flood fills many times over
    monkeypatch.setattr(sup_mod, "BUFFER_BYTES", 64 * 1024)  # and a buffer it fills: lines are dropped
    port = free_port()
    logged = broker_log
    sup = MosquittoSupervisor("mosquitto", verbose_conf(tmp_path, port), "127.0.0.1", port)
    answers: list[int] = []

    def stall_the_loop() -> None:
        """Runs on the loop's own thread: nothing of the service's runs meanwhile."""
        flood = pub(port, "-l", input="flood message\n" * 20000)  # one "Received PUBLISH" line each
        answers.append(flood.returncode)
        answers.append(pub(port, "-i", "known-device", "-m", "still served").returncode)

    async def scenario() -> None:
        await sup.start()
        try:
            stall_the_loop()
            deadline = time.monotonic() + 10
            while not any("dropped" in line for line in logged) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await sup.stop()

    asyncio.run(scenario())
    assert answers == [0, 0]  # with the loop stalled, Mosquitto kept reading its clients
    said = [line for line in logged if "output line(s) dropped" in line]
    assert said and sup.dropped_lines > 0, logged[-5:]
    assert f"({sup.dropped_lines} in all)" in said[-1]
    assert any("Received PUBLISH from" in line for line in logged)  # what fitted is logged as before


EMBEDDER = textwrap.dedent("""
    import sys, time
    from tui.embedded import EmbeddedBroker
    from store import open_registry
    broker = EmbeddedBroker(lambda: open_registry(sys.argv[1]), "127.0.0.1:0", None).start()
    print(broker.srv.supervisor.proc.pid, flush=True)
    time.sleep(600)
""")


def test_an_embedded_mosquitto_ends_when_its_process_is_killed(db_path):
    """The dashboard's Mosquitto (outlive=False) must not keep serving when the dashboard is killed."""
    proc = subprocess.Popen([sys.executable, "-c", EMBEDDER, db_path], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].endswith(b"mosquitto")  # the wrapper exec'd it: no process of ours in between
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10,
                   message="the embedded Mosquitto to end")
    finally:
        proc.kill()
        proc.wait()


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
