"""Command line: MSVD (Youtube2Text) as a DatasetDict.

The code is `modeling_mckd.data_prep.msvd`; this script only runs it, so that
`python dataset_scripts/msvd.py --help` and `python -m dataset_scripts.msvd --help` work from a checkout.
"""

from modeling_mckd.data_prep.common import run_cli
from modeling_mckd.data_prep.msvd import main


if __name__ == "__main__":
    run_cli(main)
