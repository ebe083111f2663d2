#!/usr/bin/env python
"""Distil an MCKD student from a trained teacher.

    python distill.py --teacher runs/teacher --output_dir runs/student
    python distill.py --teacher runs/teacher --kd_weight 0 --disc_weight 0 --output_dir runs/ranking_only

The student objective is ranking + kd_weight * distillation + disc_weight * discrimination
(docs/method.md). See `python distill.py --help` for every argument.
Installed, the same command line is `mckd-distill` (the code is `modeling_mckd.cli`).
"""

import sys

from modeling_mckd.cli import distill as main  # noqa: F401 - main(argv) -> results, for tests and notebooks
from modeling_mckd.cli import distill_main


if __name__ == "__main__":
    sys.exit(distill_main())
