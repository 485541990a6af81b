"""The topic matcher, checked against a reference built from MQTT's definition, with hypothesis."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from store.topics import covers, filter_problem, matches

LEVEL_WORDS = st.sampled_from(["a", "b", "c", ""])
topic_names = st.lists(LEVEL_WORDS, min_size=1, max_size=5).map("/".join)


@st.composite
def _topic_filters(draw):
    levels = draw(st.lists(st.sampled_from(["a", "b", "c", "", "+"]), min_size=1, max_size=5))
    if draw(st.booleans()):
        levels = [*levels[:draw(st.integers(0, len(levels)))], "#"]
    return "/".join(levels)


def topic_filters():
    return _topic_filters().filter(bool)  # the empty string is not a filter


def reference_matches(pattern: str, topic: str) -> bool:
    """MQTT 3.1.1 4.7 as a regular expression: '+' is one level, a trailing '/#' also matches the parent."""
    levels = pattern.split("/")
    parts = []
    for index, level in enumerate(levels):
        if level == "#":
            body = "/".join(parts)
            if index == 0:
                return re.fullmatch(r".*", topic) is not None
            return re.fullmatch(body + r"(/.*)?", topic) is not None
        parts.append("[^/]*" if level == "+" else re.escape(level))
    return re.fullmatch("/".join(parts), topic) is not None


@settings(max_examples=400)
@given(topic_filters(), topic_names)
def test_matches_agrees_with_the_reference(pattern, topic):
    assert filter_problem(pattern) is None
    assert matches(pattern, topic) == reference_matches(pattern, topic)


@settings(max_examples=400)
@given(topic_filters(), topic_filters(), st.lists(topic_names, min_size=1, max_size=20))
def test_covers_is_sound(pattern, requested, probes):
    """If a permission covers a requested filter, every topic the filter matches is allowed by the permission."""
    if covers(pattern, requested):
        for topic in probes:
            if matches(requested, topic):
                assert matches(pattern, topic)


@given(topic_filters())
def test_a_filter_covers_itself_and_hash_covers_all(pattern):
    assert covers(pattern, pattern)
    assert covers("#", pattern)


def test_covers_examples():
    assert covers("a/#", "a/b/+")
    assert covers("a/+", "a/b")
    assert not covers("a/+", "a/#")
    assert not covers("a/b", "a/+")
    assert not covers("a/+/c", "a/+/+")
    assert covers("a/#", "a")
    assert not covers("a/b/#", "a/#")


def test_filter_problems():
    assert filter_problem("a/#/b") and filter_problem("a/b#") and filter_problem("a+/b") and filter_problem("")
    assert filter_problem("a/\0") and filter_problem("x" * 1025)
    assert filter_problem("+/a/#") is None
