"""client-registry benchmarks (issue 5). Run ``python -m bench`` (or ``--quick``); see the README, "Benchmarks"."""
