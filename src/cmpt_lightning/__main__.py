"""``python -m cmpt_lightning`` runs the ``cmpt`` command line."""

from .main import main

main()
