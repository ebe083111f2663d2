"""Command line: build (or resume) a frame cache of a prepared dataset.

The code is `modeling_mckd.frame_cache`; `python dataset_scripts/build_frame_cache.py --dataset DIR --size 224
--out CACHE` is the same as `python -m modeling_mckd.frame_cache ...`.
"""

import sys

from modeling_mckd.frame_cache import main


if __name__ == "__main__":
    sys.exit(main())
