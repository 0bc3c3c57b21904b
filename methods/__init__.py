"""Built-in methods, one file each. They register through the ``bench.methods`` entry-point group
(``pyproject.toml``), exactly as third-party methods do."""
