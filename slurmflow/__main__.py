from slurmflow.cli import main

raise SystemExit(main())
