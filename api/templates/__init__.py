"""HTML templates of the report pages (package data: a package so the wheel ships its *.html)."""
