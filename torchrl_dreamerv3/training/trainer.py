"""Kept for imports written before the loop moved: ``train`` now lives in :mod:`.loop`."""
from .loop import train

__all__ = ["train"]
