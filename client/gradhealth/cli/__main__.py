"""`python -m gradhealth.cli`: the `gradhealth` command."""

from gradhealth.cli import main

raise SystemExit(main())
