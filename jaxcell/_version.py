"""The package version, in one place: ``jaxcell.__version__`` and pyproject.toml read it from here."""

__version__ = "0.1.0"
