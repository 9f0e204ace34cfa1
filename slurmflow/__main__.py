from slurmflow.cli.main import main

raise SystemExit(main())
