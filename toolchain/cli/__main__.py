"""`python -m toolchain.cli` runs vtool (handy where the console script is not on PATH)."""

from toolchain.cli import main

main()
