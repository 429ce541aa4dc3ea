"""Every chapter's exercise checks; importing this package registers them all."""

from llmlab.course.exercises import ch01, ch02, ch03, ch04, ch05

__all__ = ["ch01", "ch02", "ch03", "ch04", "ch05"]
