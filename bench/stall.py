"""``python -m bench.stall [--quick|--full]``: the broker-stall benchmark on its own (bench/b_stall.py)."""

from .b_stall import main

if __name__ == "__main__":
    raise SystemExit(main())
