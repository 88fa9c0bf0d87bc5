"""`python -m toolchain` runs vtool: the entry point torchrun starts in every worker
(`torchrun --nproc-per-node 2 -m toolchain train ...`)."""

from toolchain.cli import main

if __name__ == "__main__":
    main()
