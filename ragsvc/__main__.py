import sys

from ragsvc.cli import main

# The guard matters: vLLM's engine core is a spawned process that re-imports the main module.
if __name__ == "__main__":
    sys.exit(main())
