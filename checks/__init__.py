"""ALARA-QA check library: pure metric functions per family plus thin check classes."""
