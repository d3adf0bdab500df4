"""The promptdsl terminal UI (Textual), installed as ``promptdsl_tui``."""
