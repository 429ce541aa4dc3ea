"""The site build: what Jupyter Book needs to serve the course offline (``build``)."""
