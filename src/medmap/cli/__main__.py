"""``python -m medmap.cli``: the command line, as the console script runs it."""

from medmap.cli import main

main()
