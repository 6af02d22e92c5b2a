"""Validation: the schema, then the checks that need no source (issue 3 adds those that do)."""

from pipeline.validate.answer import parse_answer
from pipeline.validate.findings import Finding, errors
from pipeline.validate.rules import check_part, check_section, check_tags

__all__ = ["Finding", "check_part", "check_section", "check_tags", "errors", "parse_answer"]
