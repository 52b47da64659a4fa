"""The `star` command line: ``star <command> [options]`` (``star_cli.cli.main``).

The top layer of the Python packages: it may import ``flows``, ``jobs`` and ``star_core``; none of
them imports it (docs/architecture.md, tests/test_layering.py).
"""
