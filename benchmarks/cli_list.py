"""Wall time of `zoo list` (which must not import torch) against torchvision's own model listing.

    python benchmarks/cli_list.py [--repeat 11]

Each command runs in a fresh interpreter, as a user's shell would; the medians are recorded.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import write_result

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "zoo list": [sys.executable, "-m", "zoo_core", "list"],
    "torchvision list_models()": [sys.executable, "-c", "import torchvision.models as m; m.list_models()"],
}


def wall_times(command: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cli_list.json"))
    args = parser.parse_args()
    subprocess.run(COMMANDS["zoo list"], check=True, capture_output=True)  # warm the file cache once
    results = {}
    for name, command in COMMANDS.items():
        times = wall_times(command, args.repeat)
        results[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                         "max_s": round(max(times), 3)}
    write_result(args.out, {"benchmark": "zoo list wall time (fresh interpreter each run)", "repeat": args.repeat,
                            "results": results, "target_median_s": 0.5,
                            "meets_target": results["zoo list"]["median_s"] <= 0.5})


if __name__ == "__main__":
    main()
