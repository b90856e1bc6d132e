"""ALARA-QA reports: rendered from the results store only, never recomputing a metric."""
