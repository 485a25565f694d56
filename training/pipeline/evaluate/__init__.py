"""Evaluation: validation measured (never chosen on), and what could not be measured."""
