"""Command line: pre-extracted frame features (BigFile / .npy) as a DatasetDict.

The code is `modeling_mckd.data_prep.features`; this script only runs it, so that
`python dataset_scripts/features.py --help` and `python -m dataset_scripts.features --help` work from a checkout.
"""

from modeling_mckd.data_prep.common import run_cli
from modeling_mckd.data_prep.features import main


if __name__ == "__main__":
    run_cli(main)
