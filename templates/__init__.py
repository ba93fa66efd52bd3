"""Relance's default email templates, one folder per language. Shipped in the wheel."""
