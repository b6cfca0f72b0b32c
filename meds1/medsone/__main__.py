import sys

from meds1.medsone.results import main

sys.exit(main())
