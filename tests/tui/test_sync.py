"""tui.sync.EventSync on its own: no Textual, a real SQLite file."""

from __future__ import annotations

import pytest

from store import open_registry
from tui.messages import RelayedEvent
from tui.sync import EventSync, Window


@pytest.fixture
def reg(db_path, clock):
    """On the hand-moved clock of the root conftest (tests/tui/conftest.py's `reg` runs on the real one)."""
    registry = open_registry(db_path, clock=clock)
    yield registry
    registry.close()


def knock(reg, name, password="secret-1"):
    res = reg.record_attempt(name, password, f"cid-{name}", "10.0.0.7:5000", "mqtt")
    assert res.accepted, res.reason
    return res


def relayed(reg, since):
    return [RelayedEvent.from_view(e) for e in reg.events(since=since)]


def test_resync_reads_everything_and_remembers_the_last_event(reg):
    reg.unlock(300, actor="t")
    knock(reg, "dev-a")
    reg.add_user("plc-1", "password-1", actor="t")
    sync = EventSync(reg)
    delta = sync.resync(Window())
    assert delta.full and sync.synced
    assert [r.username for r in delta.page.items] == ["dev-a"] and delta.total == 1
    assert [u.name for u in delta.users] == ["plc-1"]
    assert [e.kind for e in delta.events] == ["registry.unlocked", "request.created", "user.added"]
    assert sync.last_event_id == reg.last_event_id() and delta.status.pending == 1


def test_nothing_before_the_first_resync(reg):
    reg.unlock(300, actor="t")
    sync = EventSync(reg)
    assert sync.receive(relayed(reg, 0), Window()) is None
    assert sync.poll(Window()) is None


def test_contiguous_events_are_applied_without_reading_the_changelog(reg):
    sync = EventSync(reg)
    sync.resync(Window())
    last = sync.last_event_id
    reg.unlock(300, actor="t")
    knock(reg, "dev-b")
    events = relayed(reg, last)
    calls = []
    original = reg.events
    reg.events = lambda *a, **k: calls.append(1) or original(*a, **k)
    delta = sync.receive(events, Window())
    reg.events = original
    assert calls == []  # no gap: nothing read back
    assert [e.kind for e in delta.events] == ["registry.unlocked", "request.created"]
    assert [r.username for r in delta.requests.values()] == ["dev-b"]
    assert delta.total == 1 and delta.page is None


def test_a_gap_reads_the_missing_events_from_the_database(reg):
    sync = EventSync(reg)
    sync.resync(Window())
    last = sync.last_event_id
    reg.unlock(300, actor="t")
    knock(reg, "dev-c")
    reg.add_user("plc-2", "password-2", actor="t")
    only_last = relayed(reg, last)[-1:]  # the first two were not relayed to us
    delta = sync.receive(only_last, Window())
    assert [e.kind for e in delta.events] == ["registry.unlocked", "request.created", "user.added"]
    assert "plc-2" in [u.name for u in delta.users]
    assert sync.last_event_id == reg.last_event_id()


def test_old_and_duplicate_events_are_ignored(reg):
    reg.unlock(300, actor="t")
    sync = EventSync(reg)
    sync.resync(Window())
    assert sync.receive(relayed(reg, 0), Window()) is None
    assert sync.poll(Window(), status=False) is None


def test_expiry_and_conflict_reload_the_window(reg, clock):
    reg.unlock(300, actor="t")
    knock(reg, "twin", "password-one")
    sync = EventSync(reg)
    sync.resync(Window())
    knock(reg, "twin", "password-two")  # request.conflict touches both rows
    delta = sync.poll(Window())
    assert delta.page is not None and [r.label for r in delta.page.items] == ["conflict", "conflict"]


def test_polling_never_writes(reg, clock):
    """The periodic read neither expires requests nor writes anything (expiry stays lazy in the store)."""
    reg.unlock(300, actor="t")
    knock(reg, "stale")
    sync = EventSync(reg)
    sync.resync(Window())
    clock.advance(reg.config.expire_after + 60)
    before = reg.last_event_id()
    delta = sync.poll(Window())
    sync.status()
    assert reg.last_event_id() == before  # no request.expired written by reading
    assert delta.status.pending == 1
    assert reg.requests()[0:0] == [] and reg.last_event_id() == before + 1  # the store expires when asked


def test_window_beyond_the_end_reads_the_last_page(reg):
    reg.unlock(300, actor="t")
    for i in range(5):
        knock(reg, f"dev-{i}")
    sync = EventSync(reg)
    delta = sync.resync(Window(start=40, size=3))
    assert delta.page.offset == 2 and len(delta.page.items) == 3


def test_deltas_are_handed_over_in_order(reg):
    seen = []
    sync = EventSync(reg, on_delta=seen.append)
    sync.resync(Window())
    reg.unlock(300, actor="t")
    sync.poll(Window())
    reg.lock(actor="t")
    sync.poll(Window())
    assert [d.full for d in seen] == [True, False, False]
    assert [e.kind for d in seen[1:] for e in d.events] == ["registry.unlocked", "registry.locked"]
