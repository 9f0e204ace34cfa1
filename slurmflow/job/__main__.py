"""`python -m slurmflow.job RUN_DIR NODE_KEY`: the entry point of every task's batch script."""

import sys

from slurmflow.job.task import main

if __name__ == "__main__":
    sys.exit(main())
