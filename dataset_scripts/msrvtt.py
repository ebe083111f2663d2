"""Command line: MSR-VTT (official split, 1k-A / JSFusion, 7k/9k train) as a DatasetDict.

The code is `modeling_mckd.data_prep.msrvtt`; this script only runs it, so that
`python dataset_scripts/msrvtt.py --help` and `python -m dataset_scripts.msrvtt --help` work from a checkout.
"""

from modeling_mckd.data_prep.common import run_cli
from modeling_mckd.data_prep.msrvtt import main


if __name__ == "__main__":
    run_cli(main)
