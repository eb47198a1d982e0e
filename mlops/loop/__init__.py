"""The active-learning loop, measured with a simulated annotator (``dinoseg loop simulate``).

::

    strategies.py  which results go to the annotators: uncertainty | random | diverse
    oracle.py      the simulated annotator: the ground-truth mask of the task's class
    scenario.py    the experiment: pool, test split, classes, the base without those classes
    report.py      report.json (per-strategy rounds) and the learning curve
    inprocess.py   the loop without services (the same functions, called directly)
    realstack.py   the loop on the embedded stack: workers, Label Studio, sync, dvc repro
    cli.py         ``dinoseg loop simulate`` (a plug-in subcommand)
"""
