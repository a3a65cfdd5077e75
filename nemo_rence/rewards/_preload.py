"""Fork-server preload: import math-verify and warm its parser once for all grading workers."""

from nemo_rence.rewards._worker import warm_up

warm_up()
