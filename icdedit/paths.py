"""Where icdedit finds its built-in presets and its weights folder."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def presets_dir() -> Path:
    """The built-in presets: inside the installed package, or `presets/` beside it in a checkout."""
    for candidate in (PACKAGE_DIR / "presets", PACKAGE_DIR.parent / "presets"):
        if (candidate / "models").is_dir():
            return candidate
    raise FileNotFoundError(f"icdedit's built-in presets are missing (looked in {PACKAGE_DIR}); reinstall icdedit")


def weights_home() -> Path:
    """$ICDEDIT_HOME, else the user's cache folder: where weight files are looked up."""
    if os.environ.get("ICDEDIT_HOME"):
        return Path(os.environ["ICDEDIT_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "icdedit"
