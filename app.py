#!/usr/bin/env python
"""Web page for text-to-video search: type a sentence, get the top-k clips of an index as videos.

    python app.py --index INDEX [--model DIR] [--top_k 5] [--host 127.0.0.1] [--port 7860]

The page is `modeling_mckd.app` (installed, the same command line is `mckd-app`); this file runs it from a
checkout and on Hugging Face Spaces, where MCKD_INDEX / MCKD_MODEL configure it (see that module).
"""

from modeling_mckd.app import *  # noqa: F401,F403 - the page's functions, as `app.<name>` for tests and Spaces
from modeling_mckd.app import main


if __name__ == "__main__":
    main()
