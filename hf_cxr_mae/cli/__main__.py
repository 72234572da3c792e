"""``python -m hf_cxr_mae.cli``: the console script."""

from . import main

if __name__ == "__main__":
    main()
