"""The former entry of the med-s1 import/export, kept working: `python -m meds1.report.medsone ...` is
`python -m meds1.medsone ...` (meds1/medsone/)."""

import sys

from meds1.medsone.results import main

if __name__ == "__main__":
    sys.exit(main())
