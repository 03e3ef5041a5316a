"""Revision scripts, one per schema change, in order (``down_revision`` links them)."""
