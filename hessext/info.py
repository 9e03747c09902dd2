"""``python -m hessext.info [--json]``: print what this installation provides (see hessext.info())."""

from hessext._buildinfo import main

if __name__ == "__main__":
    raise SystemExit(main())
