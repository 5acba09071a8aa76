"""`python -m impact_rt.evaluation GENERATED_DIR [...]`, the same as `impact-rt eval`."""

import argparse
import sys

from .cli import add_arguments, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m impact_rt.evaluation",
        description="YAMNet FD / KL / IS and prompt adherence of a folder of generated clips.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
