"""The check helper both SDK check scripts use: prints each check, exits non-zero at the first failure."""
import sys


class Checks:
    def __init__(self):
        self.count = 0

    def __call__(self, name, condition, detail=""):
        self.count += 1
        if not condition:
            print(f"FAIL {name}: {detail}")
            sys.exit(1)
        print(f"ok   {name}")


check = Checks()
