"""Keelson's benchmark runner, the entry point CI and docs/load-testing.md call; code in benchkit/.

uv run python load-tests/bench.py --help
"""

import sys

from benchkit.cli import main  # load-tests/ is sys.path[0] when this file is run as a script

if __name__ == "__main__":
    sys.exit(main())
