import sys

from realnvp.cli import main

sys.exit(main())
