"""Commentary appended to docs/benchmarks.md (written by hand after reading a full run and its profiles)."""

NOTES: list[str] = [
    "## Notes",
    "",
    "(to be written after the first full run)",
]
