"""registry_core.c against its Python definitions: SHA-256/HMAC against hashlib/hmac (and so
store/crypto.py's verifier), FNV-1a 64 against plugin_wire, topic matching against store/topics.py, the
control and snapshot formats against plugin_wire. The core is built alone as a shared library, loaded with
ctypes."""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.mosquitto import plugin_build
from broker.mosquitto import plugin_wire as wire
from store import crypto, topics


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    out = tmp_path_factory.mktemp("core") / "core.so"
    source = plugin_build.SOURCES[1]
    result = subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o",
                             str(out), str(source)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lib = ctypes.CDLL(str(out))
    lib.rc_fnv1a64.restype = ctypes.c_uint64
    lib.rc_fnv1a64.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.rc_hmac_sha256.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p]
    lib.rc_verifier.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                                ctypes.c_char_p]
    for name in ("rc_matches", "rc_covers"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_bool
        fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    lib.rc_filter_valid.restype = ctypes.c_bool
    lib.rc_filter_valid.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.rc_escape.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    lib.rc_secret_parse.restype = ctypes.c_bool
    lib.rc_secret_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p]
    return lib


def c_hmac(core, key: bytes, msg: bytes) -> bytes:
    out = ctypes.create_string_buffer(32)
    core.rc_hmac_sha256(key, len(key), msg, len(msg), out)
    return out.raw


RFC4231 = [  # (key, data, HMAC-SHA256)
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
]


@pytest.mark.parametrize("key, data, expected", RFC4231)
def test_hmac_rfc4231(core, key, data, expected):
    assert c_hmac(core, key, data).hex() == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_matches_python(core, key, msg):
    assert c_hmac(core, key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.text(min_size=1, max_size=50).filter(lambda s: "\0" not in s),
       st.text(max_size=80).filter(lambda s: "\0" not in s))
def test_verifier_is_the_stores(core, secret, username, password):
    u, p = username.encode("utf-8", "surrogatepass"), password.encode("utf-8", "surrogatepass")
    out = ctypes.create_string_buffer(32)
    core.rc_verifier(secret, u, len(u), p, len(p), out)
    assert out.raw.hex() == crypto.verifier(secret, username, password)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fnv1a64(core, data):
    assert core.rc_fnv1a64(data, len(data)) == wire.fnv1a64(data)


LEVELS = st.sampled_from(["a", "b", "+", "#", "", "$SYS", "$x", "ab", "a+", "#b"])
TOPIC_LIKE = st.lists(LEVELS, min_size=1, max_size=5).map("/".join)


def reference_matches(pattern: str, topic: str) -> bool:
    wild_first = pattern.split("/")[0] in ("+", "#")
    return topics.matches(pattern, topic) and not (topic.startswith("$") and wild_first)


def reference_covers(pattern: str, requested: str) -> bool:
    wild_first = pattern.split("/")[0] in ("+", "#")
    return topics.covers(pattern, requested) and not (requested.startswith("$") and wild_first)


@settings(max_examples=3000, deadline=None)
@given(TOPIC_LIKE, TOPIC_LIKE)
def test_matches_and_covers_mirror_topics_py(core, pattern, other):
    p, o = pattern.encode(), other.encode()
    assert core.rc_matches(p, len(p), o, len(o)) == reference_matches(pattern, other), (pattern, other)
    assert core.rc_covers(p, len(p), o, len(o)) == reference_covers(pattern, other), (pattern, other)
    assert core.rc_filter_valid(p, len(p)) == (topics.filter_problem(pattern) is None), pattern


@pytest.mark.parametrize("pattern, topic, expected", [
    ("#", "$SYS/x", False), ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True), ("a/#", "a", True),
    ("a/+", "a", False), ("+", "", True), ("a", "a/b", False), ("+/+", "/", True),
])
def test_matches_examples(core, pattern, topic, expected):
    assert core.rc_matches(pattern.encode(), len(pattern), topic.encode(), len(topic)) is expected


def test_filter_valid_limits(core):
    assert core.rc_filter_valid(b"a" * 1024, 1024)
    assert not core.rc_filter_valid(b"a" * 1025, 1025)
    assert not core.rc_filter_valid(b"a\0b", 3)
    assert not core.rc_filter_valid(b"", 0)


@pytest.mark.parametrize("data, expected", [
    (b"plain", "plain"), (b"a\x07b", "a\\x07b"), ("é".encode(), "\\xc3\\xa9"), (b"back\\slash", "back\\\\slash"),
])
def test_escape(core, data, expected):
    out = ctypes.create_string_buffer(64)
    core.rc_escape(data, len(data), out, 64)
    assert out.value.decode() == expected


def test_escape_caps(core):
    out = ctypes.create_string_buffer(32)
    core.rc_escape(b"\xff" * 100, 100, out, 32)
    assert len(out.value) < 32 and out.value.endswith(b"...")


@pytest.mark.parametrize("text, ok", [("ab" * 32, True), ("AB" * 32 + "\n", True), ("ab" * 32 + "\n\n", False),
                                      ("ab" * 31, False), ("zz" * 32, False), ("", False)])
def test_secret_parse(core, text, ok):
    out = ctypes.create_string_buffer(32)
    assert core.rc_secret_parse(text.encode(), len(text), out) is ok
    if ok:
        assert out.raw == bytes.fromhex(text.strip())
