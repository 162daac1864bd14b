"""Declarative interventions (work in progress: see issue 5)."""
