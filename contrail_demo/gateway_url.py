"""Where the demo gateway that ``contrail up --demo`` runs for a data directory is found again.

``contrail up --demo`` picks the gateway's port when it plans the stack and
remembers the gateway's URL in the data directory (:func:`remember_gateway_url`);
``contrail demo`` sends its questions there when neither ``--api-url`` nor
``DEMO_GATEWAY_URL`` names a gateway (:func:`remembered_gateway_url`). This
module is the only one that knows the file, so both agree on it by construction.
"""

from __future__ import annotations

from pathlib import Path

URL_FILE = "demo.url"


def remember_gateway_url(data_dir: Path | str, url: str) -> None:
    """Write the demo gateway's URL where :func:`remembered_gateway_url` finds it."""
    (Path(data_dir) / URL_FILE).write_text(f"{url}\n")


def remembered_gateway_url(data_dir: Path | str) -> str | None:
    """The URL of the demo gateway last run for ``data_dir``, or None (no file, or an empty one)."""
    try:
        return (Path(data_dir) / URL_FILE).read_text().strip() or None
    except OSError:
        return None
