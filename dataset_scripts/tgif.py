"""Command line: TGIF as a DatasetDict.

The code is `modeling_mckd.data_prep.tgif`; this script only runs it, so that
`python dataset_scripts/tgif.py --help` and `python -m dataset_scripts.tgif --help` work from a checkout.
"""

from modeling_mckd.data_prep.common import run_cli
from modeling_mckd.data_prep.tgif import main


if __name__ == "__main__":
    run_cli(main)
