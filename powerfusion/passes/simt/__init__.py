"""SIMT legalisation: passes that make a program's launch and synchronisation explicit
in GIR, run by the pipeline for SIMT targets. `launch` decides how the program maps onto
blocks and threads; `sync` places the barriers its threads need."""
