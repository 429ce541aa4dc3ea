"""What every benchmark script shares: offline settings, the machine line of its report, and
writing the report. Import it first: it also makes the checkout's ``llmlab`` importable."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout


def machine(**versions: str) -> str:
    """Today, the processor, the CPU count, Python's version, then ``name version`` pairs.

    >>> machine(torch="2.13.0").split(" · ")[-1]
    'torch 2.13.0'
    """
    parts = [str(datetime.date.today()), platform.processor() or platform.machine(),
             f"{os.cpu_count()} CPUs", f"Python {platform.python_version()}"]
    return " · ".join(parts + [f"{name} {version}" for name, version in versions.items()])


def save_report(rows: list[str], out: Path) -> None:
    """Print the report's lines and write them to ``out`` (creating its folder)."""
    report = "\n".join(rows) + "\n"
    print()
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    print(f"written to {out}")
