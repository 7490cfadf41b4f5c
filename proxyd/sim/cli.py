import sys


def main() -> int:
    print("kube-router-sim: not implemented yet", file=sys.stderr)
    return 2
