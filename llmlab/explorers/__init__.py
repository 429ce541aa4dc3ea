"""The course's interactive explorers, one module each, built on ``llmlab.interactive``:
every explorer works live in JupyterLab and Colab (recomputing with the model) and on the
static site (precomputed states embedded in the page, no kernel, no network)."""
