"""Test-wide settings: offline always, and what each notebook folder's checks must report.

pytest runs the unit tests in tests/ and, through nbval (``--nbval-lax``), every notebook in
book/, solutions/ and labs/. Solutions must pass every check and fresh labs must report every
exercise as not attempted: ``LLMLAB_EXPECT`` tells the checks which, and is set before
nbval starts a notebook's kernel (which inherits the environment).
"""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EXPECTATIONS = {"solutions": "passed", "labs": "not_attempted"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.path.suffix != ".ipynb":
        return
    expected = EXPECTATIONS.get(item.path.parent.name)
    if expected:
        os.environ["LLMLAB_EXPECT"] = expected
    else:
        os.environ.pop("LLMLAB_EXPECT", None)
