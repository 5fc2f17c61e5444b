"""`python -m benchmarks [--quick] [--json] [--repeat N] [--only SCENARIO] [--store URI]`."""
import sys

from benchmarks.run import main

sys.exit(main())
