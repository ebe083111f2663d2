"""Command line: the built-in synthetic benchmark (generated clips, captions and audio) as a DatasetDict.

The code is `modeling_mckd.data_prep.synthetic`; this script only runs it, so that
`python dataset_scripts/synthetic.py --help` and `python -m dataset_scripts.synthetic --help` work from a checkout.
"""

from modeling_mckd.data_prep.synthetic import main


if __name__ == "__main__":
    raise SystemExit(main())
