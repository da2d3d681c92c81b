"""python -m server --config PATH [--host H] [--port P] [--log-level LEVEL] [--log-format json] [--version]."""

import sys

from server.edge.serve import main

if __name__ == "__main__":
    sys.exit(main())
