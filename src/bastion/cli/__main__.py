"""``python -m bastion.cli``."""

from bastion.cli import main

raise SystemExit(main())
