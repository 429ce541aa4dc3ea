"""Course tooling: exercise checks, the exercises of each chapter, lab generation and the
instructor's workshop tools. Sits above every concept module; nothing below imports it."""
