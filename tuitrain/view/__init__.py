"""Plain-data view helpers shared by the headless console, ``info``, ``replay --print`` and the dashboard.

No torch and no textual here (rich is allowed: it is a plain renderable library): every floor that shows
a run to a person can import this one, so each fact is formatted in exactly one place.
"""
