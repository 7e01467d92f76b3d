"""SIMT legalisation: passes that make a program's launch and synchronisation explicit
in GIR, run by the pipeline for SIMT targets (launch, then sync)."""
