import sys

from weightlab.cli import main

sys.exit(main())
