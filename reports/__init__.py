"""Renderers of an ``AuditResult``: self-contained HTML, JSON summary, JUnit XML, figures."""
