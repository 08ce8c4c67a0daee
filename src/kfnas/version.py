"""The package version: the single source for the distribution and the runtime image tag."""

__version__ = "0.1.0"
