"""`python -m deploy`: see deploy.cli."""
from .cli import entry

entry()
