"""Pluggable catalogues: where a publish's versions become visible (docs/catalogs.md).

``base`` holds the interface and the values crossing it, ``registry`` finds a backend by name,
``openpype`` and ``ayon`` are the built-in backends. Nothing here imports ``ayon_api`` but
``ayon.py`` (the ``ayon`` extra)."""
