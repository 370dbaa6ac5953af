"""``python -m benchmarks ...``: the benchmark matrix, the same as ``fedcrypt bench ...``.

Usage: python -m benchmarks [--quick | --full | --preset doc] [options]  (see --help)

The individual benchmarks stay runnable on their own (``python -m benchmarks.secagg``,
``benchmarks.he``, ``benchmarks.flatten``, ...).
"""

from __future__ import annotations

import sys

from fedcrypt.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks"))
