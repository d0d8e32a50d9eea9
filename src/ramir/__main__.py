import sys

from ramir.cli import main

sys.exit(main())
