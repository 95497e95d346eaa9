"""Where xcsmoe keeps what it can rebuild or re-download: the user cache folder."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir(*parts: str) -> Path:
    """``$XCSMOE_CACHE`` or ``$XDG_CACHE_HOME/xcsmoe`` (``~/.cache/xcsmoe``), joined with
    ``parts`` (e.g. ``default_cache_dir("weights")``). Nothing is created."""
    if os.environ.get("XCSMOE_CACHE"):
        base = Path(os.environ["XCSMOE_CACHE"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xcsmoe"
    return base.joinpath(*parts)
