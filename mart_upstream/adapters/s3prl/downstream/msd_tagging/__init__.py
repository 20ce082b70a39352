"""Million Song Dataset top-50 last.fm tagging on the published split."""
