"""What people read about an experiment: the report, trial listings and live progress lines.

``report`` builds the interactive HTML page and Markdown summary of a run from what
``report_data`` gathers (every study, decisions, statistics) and ``curves`` reads from the
trials' TensorBoard logs; ``dashboard`` serves that page live from the store; ``listing`` the rows
of ``kfnas trials``; ``watch`` follows a running experiment in the store for ``kfnas run``;
``rows`` is how a trial reads in all of them (one row formatter, one line). Views only read the
store; they never write trial records.
"""
