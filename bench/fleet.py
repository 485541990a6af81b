"""``python -m bench.fleet [--quick]``: fleet onboarding by one approval rule (bench/b_fleet.py)."""

from .b_fleet import main

if __name__ == "__main__":
    raise SystemExit(main())
