"""josh-factory: the warehouse and the `factory` command line."""

__version__ = "0.1.0"
