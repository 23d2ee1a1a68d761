"""`make bench`: icdedit's edit path timed against a baseline that works like the official code."""
