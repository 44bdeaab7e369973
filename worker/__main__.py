"""`python -m orderfleet.worker ...` is the `orderfleet` command."""

from orderfleet.worker.cli import main

main()
