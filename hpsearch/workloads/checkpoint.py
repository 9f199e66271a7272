"""A trial's checkpoints: written so that a kill never leaves one half-written, read back or refused.

A checkpoint is one file in the trial's own folder (TrialRecord.checkpoint_dir, the same on every run of
the trial). `save` writes a temporary file beside it and renames it over the old one (os.replace is
atomic): a run killed while saving leaves the previous checkpoint whole, and a reader sees the old file
or the new one, never a mix. No fsync: a killed process's writes survive in the page cache; only a
machine that loses power may lose the latest checkpoint (the trial then resumes from an older one, or
from scratch). With torch imported the state is written by torch.save (tensors, optimiser states), else
by pickle. `load` gives None for no checkpoint, and for one that cannot be read (cut, corrupt, from an
incompatible version): it says so in one line on stderr (the trial's log) and the trial starts over.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

NAME = "checkpoint.pt"  # the default file name in the trial's folder


def save(folder: Path, state: Any, name: str = NAME) -> Path | None:
    """Write `state` to folder/name atomically; the path, or None (and one line on stderr) when the folder
    cannot be written: a checkpoint is insurance, and the trial trains on without it."""
    path = folder / name
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if "torch" in sys.modules:
            sys.modules["torch"].save(state, tmp)
        else:
            with open(tmp, "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as e:
        print(f"hpsearch: checkpoint not saved to {path} ({e.strerror or e}); the trial goes on", file=sys.stderr)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return None
    return path


def load(folder: Path, name: str = NAME) -> Any | None:
    """The state last saved to folder/name, or None: none saved yet, or unreadable (said on stderr)."""
    path = folder / name
    if not path.is_file():
        return None
    try:
        if zipfile.is_zipfile(path):  # torch.save's format
            import torch

            return torch.load(path, map_location="cpu", weights_only=False)
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:  # a cut or corrupt file, or one a changed workload cannot unpickle
        why = f"{type(e).__name__}: {e}"
        print(f"hpsearch: checkpoint {path} unreadable ({why}); the trial starts from scratch", file=sys.stderr)
        return None
