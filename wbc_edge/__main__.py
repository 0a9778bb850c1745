"""``python -m wbc_edge``: the same as the ``wbc-edge`` command."""

from wbc_edge.cli import main

if __name__ == "__main__":
    main()
