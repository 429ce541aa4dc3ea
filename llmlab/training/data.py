"""Training data the nanoGPT way: one long array of token ids on disk, read through a
memory map, and batches of random windows cut out of it.

>>> from llmlab.tokenization import CharTokenizer
>>> text = "to be or not to be"
>>> tok = CharTokenizer.from_text(text)
>>> tok.vocab_size, tok.decode(tok.encode("be"))
(7, 'be')
>>> ids = np.array(tok.encode(text), dtype=np.uint16)
>>> train_ids, val_ids = split_tokens(ids, val_fraction=0.25)
>>> len(train_ids), len(val_ids)
(13, 5)
>>> sampler = WindowSampler(train_ids, batch_size=2, block_size=4, seed=0)
>>> x, y = sampler.sample()
>>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())     # y is x shifted left by one
(torch.Size([2, 4]), True)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "token_dtype",
    "write_tokens",
    "encode_file",
    "read_tokens",
    "split_tokens",
    "WindowSampler",
]


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: 2 bytes a token up to 65,536 ids
    (GPT-2's 50,257 fit), 4 bytes beyond.

    >>> token_dtype(50257), token_dtype(100_277)
    (dtype('uint16'), dtype('uint32'))
    """
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int; got {vocab_size!r}")
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write_tokens(ids: Sequence[int] | np.ndarray, path: str | os.PathLike,
                 vocab_size: int) -> Path:
    """Write ``ids`` as a flat binary file of ``token_dtype(vocab_size)`` and return its path.

    The file is written beside its destination, then renamed: several processes (the
    ranks of a distributed run) may prepare the same file without ever reading half of it.
    """
    dtype = token_dtype(vocab_size)
    array = np.asarray(ids, dtype=np.int64)
    if array.ndim != 1:
        raise ValueError(f"ids must be 1-D; got shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise ValueError(f"ids must lie in [0, vocab_size={vocab_size}); "
                         f"got ids from {array.min()} to {array.max()}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    array.astype(dtype).tofile(partial)
    os.replace(partial, path)
    return path


def encode_file(text_path: str | os.PathLike, out_path: str | os.PathLike,
                encode: Callable[[str], Sequence[int]], vocab_size: int) -> Path:
    """Encode a UTF-8 text file with ``encode`` into a token file (see ``write_tokens``).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.txt").write_text("abba")
    >>> from llmlab.tokenization import CharTokenizer
    >>> tok = CharTokenizer("ab")
    >>> read_tokens(encode_file(folder / "a.txt", folder / "a.bin", tok.encode, 2), 2)
    memmap([0, 1, 1, 0], dtype=uint16)
    """
    text = Path(text_path).read_text(encoding="utf-8")
    return write_tokens(encode(text), out_path, vocab_size)


def read_tokens(path: str | os.PathLike, vocab_size: int) -> np.memmap:
    """The token file at ``path`` as a read-only memory map: nothing is loaded until a
    window is cut out of it, so a corpus larger than memory trains just as well."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no token file at {path}; write one with encode_file()")
    dtype = token_dtype(vocab_size)
    if path.stat().st_size % dtype.itemsize:
        raise ValueError(f"{path} holds {path.stat().st_size} bytes, not a whole number of "
                         f"{dtype} tokens: was it written for another vocab_size?")
    return np.memmap(path, dtype=dtype, mode="r")


def split_tokens(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Train on the first ``1 - val_fraction`` of the tokens, validate on the rest.

    A contiguous split (not shuffled windows) keeps validation text unseen: random
    windows of one array would overlap the training windows.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    cut = int(len(ids) * (1.0 - val_fraction))
    return ids[:cut], ids[cut:]


class WindowSampler:
    """Random windows of ``block_size + 1`` tokens, cut into inputs ``x`` and targets ``y``.

    All randomness comes from one seeded ``numpy.random.Generator``, whose state
    ``state_dict()`` returns, so a resumed run draws the same batches as an uninterrupted
    one. In a data-parallel run each of ``world_size`` ranks draws the same global
    batch of ``batch_size`` windows and keeps its own slice of ``batch_size // world_size``
    rows: the ranks together see exactly the batch one process would.

    >>> ids = np.arange(100, dtype=np.uint16)
    >>> x, y = WindowSampler(ids, batch_size=4, block_size=3, seed=1).sample()
    >>> x.dtype, bool((y == x + 1).all())
    (torch.int64, True)
    >>> WindowSampler(ids[:3], batch_size=1, block_size=3)
    Traceback (most recent call last):
    ...
    ValueError: need more than block_size=3 tokens to cut one window; got 3
    """

    def __init__(self, ids: np.ndarray, batch_size: int, block_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        for name, value in (("batch_size", batch_size), ("block_size", block_size),
                            ("world_size", world_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if len(ids) <= block_size:
            raise ValueError(f"need more than block_size={block_size} tokens to cut one "
                             f"window; got {len(ids)}")
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} must split evenly over "
                             f"world_size={world_size} ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
        self.ids, self.batch_size, self.block_size = ids, batch_size, block_size
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.default_rng(seed)

    def sample(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(x, y)``, each ``(batch_size // world_size, block_size)`` int64."""
        starts = self.rng.integers(0, len(self.ids) - self.block_size, size=self.batch_size)
        per_rank = self.batch_size // self.world_size
        starts = starts[self.rank * per_rank:(self.rank + 1) * per_rank]
        windows = np.stack([np.asarray(self.ids[s:s + self.block_size + 1], dtype=np.int64)
                            for s in starts])
        batch = torch.from_numpy(windows).to(device)
        return batch[:, :-1], batch[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
