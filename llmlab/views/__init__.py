"""Views: interactive figures that work live in JupyterLab and Colab (recomputing with the
model) and on the static site (precomputed states embedded in the page, no kernel, no
network). ``interactive`` holds the shared machinery; each explorer is one module on it."""
