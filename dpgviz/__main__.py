"""`python -m dpgviz`: the same as `python main.py` (the window's model jobs run their commands this way)."""

import sys

from dpgviz.cli import main

if __name__ == "__main__":
    sys.exit(main())
