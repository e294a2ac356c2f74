import sys

from chipforge.cli import main

sys.exit(main())
