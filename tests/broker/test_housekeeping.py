"""The running server's housekeeping (every 2 s, from the relay): what no other process may be there to do."""

from __future__ import annotations

from tests.broker.conftest import wait_until


def test_the_server_closes_a_window_that_ran_out_in_the_audit_log(server, admin_reg):
    """Nobody asks for the status: the log still says when unknown devices stopped being recorded (by
    "registry", stamped with the moment the window ran out), once."""
    until = admin_reg.unlock(1, actor="op").unlocked_until
    locked = wait_until(lambda: [e for e in admin_reg.events() if e.kind == "registry.locked"], timeout=6,
                        message="registry.locked in the audit log")
    assert [(e.actor, e.detail, e.time) for e in locked] == [("registry", {"expired": True}, until)]
