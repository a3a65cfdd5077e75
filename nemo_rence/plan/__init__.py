"""Memory planner: per-GPU memory of every TP/PP/DP layout of a run (``nemo-rence plan``).

``memory`` is the arithmetic (formulas in its docstring), ``models`` the architecture numbers of
the recipe models, ``cli`` the command.
"""
