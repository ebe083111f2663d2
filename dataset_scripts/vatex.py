"""Command line: VATEX as a DatasetDict.

The code is `modeling_mckd.data_prep.vatex`; this script only runs it, so that
`python dataset_scripts/vatex.py --help` and `python -m dataset_scripts.vatex --help` work from a checkout.
"""

from modeling_mckd.data_prep.common import run_cli
from modeling_mckd.data_prep.vatex import main


if __name__ == "__main__":
    run_cli(main)
