"""``python -m ramir.cli`` (e.g. under ``torchrun -m ramir.cli pretrain ...``)."""

import sys

from ramir.cli import main

sys.exit(main())
