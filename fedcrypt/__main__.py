"""``python -m fedcrypt`` runs the command line."""

import sys

from fedcrypt.cli import main

sys.exit(main())
