"""``python -m cli``: the same as the ``crm`` console script."""

from cli.main import main

main()
