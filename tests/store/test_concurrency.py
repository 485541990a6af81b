"""Two processes writing the same SQLite file at once lose nothing."""

import multiprocessing as mp
import time

from store import open_registry

DEVICES = 60


def record_many(path, start_event):
    reg = open_registry(path)
    start_event.wait()
    outcomes = []
    for i in range(DEVICES):
        outcomes.append(reg.record_attempt(f"dev-{i:03d}", f"password-{i}", f"c{i}", f"10.0.{i}.1", "mqtt").outcome)
        outcomes.append(reg.record_attempt(f"dev-{i:03d}", f"password-{i}", f"c{i}", f"10.0.{i}.1", "mqtt").outcome)
    reg.close()
    return outcomes


def grant_all_that_appear(path, start_event, queue):
    reg = open_registry(path)
    start_event.wait()
    granted = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        names = [r.username for r in reg.requests()]
        for result in reg.grant(names, ["devices/{username}/#=readWrite"], actor="granter"):
            if result.ok:
                granted.add(result.request.username)
        if len(granted) == DEVICES:
            break
    queue.put(sorted(granted))
    reg.close()


def test_recording_and_granting_from_two_processes(db_path):
    reg = open_registry(db_path)
    reg.unlock(600, actor="op")
    ctx = mp.get_context("spawn")
    start, queue = ctx.Event(), ctx.Queue()
    granter = ctx.Process(target=grant_all_that_appear, args=(db_path, start, queue))
    granter.start()
    start.set()
    outcomes = record_many(db_path, start)
    granted = queue.get(timeout=120 if granter.is_alive() else 1)
    granter.join(timeout=30)
    assert granter.exitcode == 0
    # each device recorded once; its retry either found the pending row or, if already granted, the user
    assert outcomes.count("pending") == DEVICES
    assert set(outcomes) <= {"pending", "retry", "known_user"}
    assert granted == sorted(f"dev-{i:03d}" for i in range(DEVICES))
    all_requests = reg.requests(include_all=True)
    assert len(all_requests) == DEVICES and all(r.status == "granted" for r in all_requests)
    assert len(reg.users()) == DEVICES
    assert all(reg.authenticate(f"dev-{i:03d}", f"password-{i}") for i in range(DEVICES))
    kinds = [e.kind for e in reg.events()]
    assert kinds.count("request.created") == DEVICES and kinds.count("request.granted") == DEVICES
    ids = [e.id for e in reg.events()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    reg.close()


def open_repeatedly(path, start_event, queue):
    start_event.wait()
    try:
        for _ in range(15):
            reg = open_registry(path)
            reg.status()
            reg.close()
        queue.put("ok")
    except Exception as exc:  # reported to the test, not lost in a child
        queue.put(f"{type(exc).__name__}: {exc}")


def test_opening_while_another_process_writes(db_path):
    """Opening checks the schema and then writes: it must wait for a busy writer, not fail at once."""
    writer = open_registry(db_path)
    ctx = mp.get_context("spawn")
    start, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=open_repeatedly, args=(db_path, start, queue)) for _ in range(3)]
    for proc in procs:
        proc.start()
    start.set()
    results = []
    deadline = time.monotonic() + 120
    while len(results) < len(procs) and time.monotonic() < deadline:
        writer.unlock(60, actor="writer")  # keep committing while the others open
        while not queue.empty():
            results.append(queue.get())
    for proc in procs:
        proc.join(timeout=30)
    assert results == ["ok"] * len(procs)
    writer.close()
