"""`batch --engine ray` against the local engine on this machine: the tiny model, N synthetic
photos, each engine run as a user runs it (a fresh process, `--address local`: a Ray of its
own), with its times split into start-up and rows.

    python -m benchmarks.ray_throughput [--rows 48] [--size 256]

For each run: the wall time of the command; `ray_up` = the time until Ray is started and
connected; `first` = the time to the first recorded item (for Ray: Ray, then the actors started,
each importing torch and loading the model; locally: loading the model); `rows/s` = the items
after the first divided by the time after it (the steady rate).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def photos(folder: Path, count: int, size: int) -> None:
    from tests.helpers import make_photo

    folder.mkdir(parents=True)
    for i in range(count):
        make_photo(size, size, seed=i).save(folder / f"p{i:04d}.png")


def timed_run(command: list[str], report: Path) -> dict:
    """The command's wall time, when Ray was up (its `ray: N node(s)` line), and when each
    item's line reached the report (polled)."""
    seen: list[float] = []
    ray_up: list[float] = []
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def watch() -> None:
        while process.poll() is None:
            if report.is_file():
                count = report.read_text().count('"status": "done"')
                seen.extend([time.perf_counter() - started] * (count - len(seen)))
            time.sleep(0.02)

    def read_stderr() -> None:
        for line in process.stderr:
            if line.startswith("ray: ") and "node(s)" in line:
                ray_up.append(time.perf_counter() - started)

    threads = [threading.Thread(target=watch), threading.Thread(target=read_stderr)]
    for thread in threads:
        thread.start()
    stdout = process.stdout.read()
    process.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    summary = json.loads(stdout)
    done = len(summary["done"])
    first = seen[0] if seen else wall
    last = seen[-1] if len(seen) == done else wall
    rate = (done - 1) / (last - first) if done > 1 and last > first else float("nan")
    timing = {"wall_s": round(wall, 1), "ray_up_s": round(ray_up[0], 1) if ray_up else None}
    return {**timing, "first_s": round(first, 1), "rows_per_s": round(rate, 2), "done": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photos(root / "photos", args.rows, args.size)
        base = [sys.executable, "-m", "icdedit", "batch", str(root / "photos"), "-s", "a photo of a cat"]
        base += ["-t", "a photo of a dog", "--model", "tiny", "--device", "cpu", "--json"]
        runs = {
            "local": [],
            "ray, 1 worker": ["--engine", "ray", "--address", "local", "--workers", "1"],
            "ray, 2 workers": ["--engine", "ray", "--address", "local", "--workers", "2"],
        }
        print(f"{args.rows} photos of {args.size} px, tiny model, {os.cpu_count()} CPUs")
        for name, flags in runs.items():
            out = root / name.replace(", ", "-").replace(" ", "")
            result = timed_run([*base, "--out", str(out), *flags], out / "results.jsonl")
            print(f"{name:15s} {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
