"""Doorman: privacy-first health checks for Celery clusters on Redis."""

__version__ = "0.1.0"
