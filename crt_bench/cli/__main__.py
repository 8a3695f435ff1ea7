"""``python -m crt_bench.cli``."""
from crt_bench.cli.app import main

if __name__ == "__main__":
    main()
