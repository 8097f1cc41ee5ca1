"""``python -m medmap``: the same command line as the ``medmap`` script (and what ``torchrun -m medmap`` runs)."""

from medmap.cli import main

main()
