"""`python -m giftgraph.cli`: the `giftgraph` command."""

from giftgraph.cli import main

raise SystemExit(main())
