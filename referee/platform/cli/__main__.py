"""``python -m referee.platform.cli``."""

from referee.platform.cli.main import main

main()
