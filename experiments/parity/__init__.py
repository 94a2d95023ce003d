"""Golden values from the authors' own code, and our side of them (see cases.py)."""
