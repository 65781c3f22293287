"""`python app.py [options]`: the rad3d review app on the embedded default (same as `rad3d app`)."""

import sys

from cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
