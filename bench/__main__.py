"""python -m bench [RUN_DIR] [--threads-all] [--wall] [--quick] [--out bench/results.json]: see bench/goals.py."""

import sys

from bench.goals import main

sys.exit(main())
