"""``tuitrain report``: the tables and figures of a course report, from run files (issue 12).

Figures need matplotlib (``pip install "tuitrain[report]"``); the tables do not. Nothing here imports
torch or textual: a report is made offline, from files, on any machine."""
