"""`python -m worker ...` is the `orderfleet` command."""

from worker.cli import main

main()
