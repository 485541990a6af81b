"""Runs the libFuzzer targets of broker/mosquitto/fuzz/ (built against the Mosquitto-free core, with ASan
and UBSan) for a bounded time each, from a small seed corpus made with plugin_wire. Needs clang and
libclang-rt-14-dev: without them this test fails (it never skips)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from broker.mosquitto import plugin_build
from broker.mosquitto import plugin_wire as wire

FUZZ_DIR = plugin_build.SOURCE.parent / "fuzz"
SECONDS = 14  # per target; three targets stay under a minute with their builds
FLAGS = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined", "-Wall", "-Wextra"]


def _accounts() -> list[wire.Account]:
    return [
        wire.Account("svc", bytes(32), wire.SERVICE, "", ((wire.READ | wire.WRITE, "$registry/#"),)),
        wire.Account("dev", bytes(range(32)), 0, "cid", ((wire.READ, "a/+/c"), (wire.WRITE, "a/#"))),
        wire.Account("adm", b"\xff" * 32, wire.ADMIN | wire.DISABLED, "", ((wire.READ, "$SYS/#"),)),
        wire.Account("crt", bytes(32), 0, "", ((wire.READ, "c/#"),), certificate=b"\xab" * 32),  # bound (bit3)
    ]


def _frame(message: bytes, raw: bool = True) -> bytes:
    return bytes([0 if raw else 1]) + struct.pack("!H", len(message)) + message


def control_seeds() -> list[bytes]:
    records = [a.record() for a in _accounts()]
    msgs = [
        wire.control_message(1, records),
        wire.control_message(2, [wire.delete_record("dev"), wire.window_record(1e9)]),
        wire.control_message(3, [wire.RESET_RECORD, records[0]]),
        wire.control_message(4, []),
        # the same name bound, rebound and unbound: kicks on each change of the binding
        wire.control_message(5, [records[3], wire.Account("crt", bytes(32), certificate=b"\xcd" * 32).record(),
                                 wire.Account("crt", bytes(32)).record()]),
    ]
    seeds = [b"".join(_frame(m) for m in msgs), _frame(msgs[0]) + _frame(msgs[0][:-3]),
             _frame(b"".join(records), raw=False) + _frame(wire.delete_record("svc"), raw=False)]
    return seeds


def snapshot_seeds() -> list[bytes]:
    records = [a.record() for a in _accounts()]
    return [b"\x00" + wire.snapshot(7, None, records), b"\x00" + wire.snapshot(0, 1e9, []),
            b"\x01" + wire.snapshot(1, None, records[:1])[:-8] + bytes(8)]


def topics_seeds() -> list[bytes]:
    pairs = [("a/+/c", "a/b/c"), ("a/#", "a"), ("#", "$SYS/x"), ("$SYS/#", "$SYS/broker"), ("+/+", "/"),
             ("a/b", "a/+"), ("a/+", "a/#"), ("a+/b", "a+/b")]
    return [p.encode() + b"\0" + t.encode() for p, t in pairs]


TARGETS = {"control": control_seeds, "snapshot": snapshot_seeds, "topics": topics_seeds}


@pytest.fixture(scope="module")
def clang() -> str:
    path = shutil.which("clang")
    if path is None:
        pytest.fail("clang not installed: the fuzz targets need clang and libclang-rt-14-dev "
                    "(apt-get install clang libclang-rt-14-dev)")
    return path


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target(clang, tmp_path: Path, name: str):
    binary = tmp_path / f"fuzz_{name}"
    built = subprocess.run([clang, *FLAGS, f"-I{FUZZ_DIR.parent}", str(FUZZ_DIR / f"fuzz_{name}.c"),
                            str(plugin_build.SOURCES[1]), "-o", str(binary)], capture_output=True, text=True,
                           timeout=180)
    if built.returncode != 0 and "fuzzer" in built.stderr:
        pytest.fail("cannot link a libFuzzer target (apt-get install libclang-rt-14-dev): "
                    + built.stderr.strip().splitlines()[-1])
    assert built.returncode == 0 and built.stderr == "", built.stderr
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index, seed in enumerate(TARGETS[name]()):
        (corpus / f"seed-{index}").write_bytes(seed)
    run = subprocess.run([str(binary), f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=2048",
                          "-print_final_stats=1", f"-artifact_prefix={tmp_path}/", str(corpus)],
                         capture_output=True, text=True, timeout=SECONDS + 120)
    tail = "\n".join(run.stderr.splitlines()[-40:])
    assert run.returncode == 0, f"fuzz_{name} found a problem:\n{tail}"
    assert "stat::number_of_executed_units" in run.stderr
