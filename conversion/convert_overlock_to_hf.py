#!/usr/bin/env python
"""Convert a released OverLoCK checkpoint to a transformers folder (same as `overlock-hf convert`).

    python conversion/convert_overlock_to_hf.py overlock_t_in1k_224.pth overlock-t [--variant overlock-t] [--ema]
"""

import sys

from overlock_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
