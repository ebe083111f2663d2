#!/usr/bin/env python
"""Search a folder of videos by text with a trained MCKD model.

    python search.py index --model runs/protocol/seed-0/mckd_full_teacher_towers --videos my_videos/ --out my_index
    python search.py query --index my_index "a red circle moves to the left"
    python search.py query --index my_index -k 10 --json "a dog runs" "a man is cooking"

`index` is resumable (rerun it after adding files: only new or changed files are encoded) and lists
the files it could not read. A model that fuses audio into its video embedding (the default-run
teacher) also needs `--audio_dir` with one `<video stem>.npy` per video. See docs/search.md.
Installed, the same command line is `mckd-search` (the code is `modeling_mckd.cli`).
"""

import sys

from modeling_mckd.cli import build_search_parser as build_parser  # noqa: F401
from modeling_mckd.cli import search as main  # noqa: F401 - main(argv) -> exit status
from modeling_mckd.cli import search_main


if __name__ == "__main__":
    sys.exit(search_main())
