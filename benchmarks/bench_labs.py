"""How long each notebook takes to run on this machine: the numbers in the instructor guide.

Runs every book page, lab (unsolved, as handed out) and solution with nbclient, as a
learner's kernel would, and writes a markdown table (default
benchmarks/results/labs.md, which book/instructors.md includes). The baseline is the
course's own budget: every notebook in under 2 minutes on 2 CPU cores.

    python benchmarks/bench_labs.py [--out benchmarks/results/labs.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 120.0


def run_notebook(path: Path) -> float:
    """Execute a notebook in its own folder; return the wall time in seconds."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "labs.md")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("LLMLAB_EXPECT", None)
    rows = []
    for folder in ("book", "labs", "solutions"):
        for path in sorted((ROOT / folder).glob("[0-9][0-9]_*.ipynb")):
            seconds = run_notebook(path)
            rows.append((f"{folder}/{path.name}", seconds))
            print(f"{folder}/{path.name}: {seconds:.1f} s", flush=True)
    lines = [
        f"Measured {date.today()} on {platform.machine()}, {os.cpu_count()} CPU cores, CPU "
        f"only, assets already cached, by `python benchmarks/bench_labs.py` (nbclient, one "
        f"fresh kernel per notebook, including its start-up).",
        "",
        "| notebook | run time (s) | share of the 2-minute budget |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{name}` | {seconds:.1f} | {seconds / BUDGET_S:.0%} |" for name, seconds in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
