"""``python -m app.cli``: the same as the ``parafeed`` command."""

from app.cli import main

raise SystemExit(main())
