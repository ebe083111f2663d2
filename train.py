#!/usr/bin/env python
"""Train an MCKD teacher by multimodal contrastive learning.

    python train.py --output_dir runs/teacher                  # synthetic default
    accelerate launch train.py --config configs/synthetic_teacher.yaml --dataset data/msrvtt --output_dir runs/t

See `python train.py --help` for every argument; a `--config` YAML/JSON file sets any of them.
Installed, the same command line is `mckd-train` (the code is `modeling_mckd.cli`).
"""

import sys

from modeling_mckd.cli import train as main  # noqa: F401 - main(argv) -> results, for tests and notebooks
from modeling_mckd.cli import train_main


if __name__ == "__main__":
    sys.exit(train_main())
