"""Every chapter's exercise checks; importing this package registers them all."""

from llmlab.exercises import ch01

__all__ = ["ch01"]
