"""Private files and directories: spans (and so the spool, the database, Redis data) can hold secrets.

Directories Contrail creates are 0700 and files it creates are 0600, whatever the
umask. A directory or file that already exists keeps its mode: the user may have
chosen it (a shared data directory), and changing it behind their back would be
worse than leaving it.
"""

from __future__ import annotations

import os

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: str | os.PathLike) -> None:
    """Create ``path`` and any missing parents as 0700; existing directories are left as they are."""
    missing = []
    current = os.path.abspath(os.fspath(path))
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:  # made by a concurrent process: its mode is its own
            continue
        os.chmod(directory, DIR_MODE)  # exact, even under an unusual umask


def create_private_file(path: str | os.PathLike) -> None:
    """Create an empty 0600 file at ``path`` unless something exists there already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
