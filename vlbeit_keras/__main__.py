"""``python -m vlbeit_keras <command>`` (also the ``vlbeit-keras`` console script).

Commands live in :mod:`vlbeit_keras.cli`, one module per command.
"""

import sys

from vlbeit_keras.cli import main

if __name__ == "__main__":
    sys.exit(main())
