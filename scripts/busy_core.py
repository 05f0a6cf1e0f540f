"""Keep one CPU core busy, as another user's job would, for a while (then stop by itself).

    python scripts/busy_core.py --minutes 16 &      # beside `make demo`: a shared 2-core machine

A pure Python loop: one core, no memory traffic to speak of. Prints how many loop iterations it
ran per second at the end, so a run beside it can be told apart from a quiet one.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    args = parser.parse_args()
    end = time.monotonic() + args.minutes * 60
    loops = 0
    while time.monotonic() < end:
        for _ in range(100_000):
            pass
        loops += 1
    print(
        f"busy_core: {loops * 100_000 / (args.minutes * 60):,.0f} iterations/s for "
        f"{args.minutes:g} minutes"
    )


if __name__ == "__main__":
    main()
