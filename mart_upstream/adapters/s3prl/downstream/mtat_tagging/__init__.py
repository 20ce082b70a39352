"""MagnaTagATune top-50 auto-tagging."""
