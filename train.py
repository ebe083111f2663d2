#!/usr/bin/env python
"""Train an MCKD teacher by multimodal contrastive learning.

    python train.py --output_dir runs/teacher                  # synthetic default
    accelerate launch train.py --config configs/synthetic_teacher.yaml --dataset data/msrvtt --output_dir runs/t

See `python train.py --help` for every argument; a `--config` YAML/JSON file sets any of them.
"""

import json
import logging

from modeling_mckd.arguments import DataArguments, ModelArguments, RunArguments, TeacherArguments, parse_arguments
from modeling_mckd.runner import is_main_process, run_teacher


def main(argv=None) -> dict:
    model_args, data_args, run_args, teacher_args = parse_arguments(
        (ModelArguments, DataArguments, RunArguments, TeacherArguments), argv
    )
    results = run_teacher(model_args, data_args, run_args, teacher_args)
    if is_main_process():  # under accelerate launch, one copy of the results
        print(json.dumps({k: v for k, v in results.items() if not isinstance(v, (list, dict))}, indent=2, default=float))
    return results



if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
