"""Configuration search: the best deployment under an objective (and the SLO) in a fraction
of the grid's trials, chosen by Optuna.

    space.py      the space as indices, and the nearest configuration to a suggestion
    optimizer.py  the ask/measure/tell loop and its stopping rules
    objective.py  a trial's objective, interval and feasibility from its Result
    answer.py     the winner, the runner-up, distinguishability, the Pareto front
    confirm.py    the paired A/B tie-break of the top two
    trials.py     a search cell, trial by trial (measured through run/)
"""
