"""client-registry benchmarks (issues 5 and 8). Run ``python -m bench`` (or ``--quick``); see the README,
"Benchmarks"."""
