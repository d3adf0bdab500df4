"""Screens of the promptdsl terminal UI (modal pickers, the spec runner, help)."""
