#!/usr/bin/env python
"""Distil an MCKD student from a trained teacher.

    python distill.py --teacher runs/teacher --output_dir runs/student
    python distill.py --teacher runs/teacher --kd_weight 0 --disc_weight 0 --output_dir runs/ranking_only

The student objective is ranking + kd_weight * distillation + disc_weight * discrimination
(docs/method.md). See `python distill.py --help` for every argument.
"""

import json
import logging

from modeling_mckd.arguments import DataArguments, DistillArguments, ModelArguments, RunArguments, parse_arguments
from modeling_mckd.runner import is_main_process, run_student


def main(argv=None) -> dict:
    model_args, data_args, run_args, distill_args = parse_arguments(
        (ModelArguments, DataArguments, RunArguments, DistillArguments), argv, defaults={"model_preset": "student"}
    )
    results = run_student(model_args, data_args, run_args, distill_args)
    if is_main_process():  # under accelerate launch, one copy of the results
        print(json.dumps({k: v for k, v in results.items() if not isinstance(v, (list, dict))}, indent=2, default=float))
    return results



if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
