"""What people read about an experiment: the report, trial listings and live progress lines.

``report`` builds the HTML page and Markdown summary of a run; ``listing`` the rows of
``kfnas trials``; ``watch`` follows a running experiment in the store for ``kfnas run``; ``rows``
is how a trial reads in all of them (one row formatter, one line). Views only read the store; they
never write trial records.
"""
