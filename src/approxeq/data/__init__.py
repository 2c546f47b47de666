"""Task generators and loaders (never imports models)."""

from approxeq.data.base import TaskGenerator

__all__ = ["TaskGenerator"]
