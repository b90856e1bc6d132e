"""A corpus of malformed inputs: every reader, the case table and the protocol.

Nothing binary is committed: the builders write each bad input into a temporary folder at
test time, deterministically (fixed seeds, no clock, no network). :mod:`.corpus` is the
index (``ALL_INPUTS``); :mod:`.cohort` the good cohort they are embedded in; :mod:`.files`
the bad files per reader; :mod:`.tables` the bad case tables and protocols.
``tests/qa/test_bad_inputs.py`` asserts that each one gives a one-line error naming the
case, the file and the field with what to do, and that a run with bad cases still stores
the good ones.
"""
