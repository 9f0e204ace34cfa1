"""`python -m slurmflow.task RUN_DIR NODE_KEY`, as batch scripts written by slurmflow before the
job wrapper moved to `slurmflow.job` name it: a campaign launched before an upgrade still starts
its requeued and pending tasks. New scripts run `python -m slurmflow.job`."""

import sys

from slurmflow.job.task import main

if __name__ == "__main__":
    sys.exit(main())
