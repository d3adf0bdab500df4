"""Widgets of the promptdsl terminal UI."""
