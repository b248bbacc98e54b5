"""Merge codes: one sandboxed renderer for email and SMS; email templates and SMTP sending."""
