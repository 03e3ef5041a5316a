"""``python -m modelport`` runs the command line."""

from modelport.cli import main

main()
