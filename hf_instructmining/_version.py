"""The package version, in a module of its own so that the card builders read it without importing the package
facade, which sits above every layer."""

__version__ = "0.1.0.dev0"
