"""``python -m bench``: the comparison with the peer pools (see bench/peers.py)."""

import sys

from .peers import main

sys.exit(main())
