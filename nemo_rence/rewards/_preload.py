"""Fork-server preload: import math-verify and warm its parser once for all grading workers.

Imported in the fork server: when the fork server is a child of the pool's owner (whose pid the
pool puts in :data:`~nemo_rence.rewards._worker.OWNER_ENV`), it dies with that owner too.
"""

import os

from nemo_rence.rewards._worker import OWNER_ENV, warm_up
from nemo_rence.signals import die_with_parent

if os.environ.get(OWNER_ENV) == str(os.getppid()):
    die_with_parent(int(os.environ[OWNER_ENV]))
warm_up()
