"""``python -m mainspring``: the same as the ``mainspring`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
