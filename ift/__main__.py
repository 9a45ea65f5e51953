import sys

from ift.cli import main

sys.exit(main())
