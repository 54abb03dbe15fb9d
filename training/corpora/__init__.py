"""Data sets that ship as code (generated deterministically), for models without a bundled real data set."""
