"""The policy as data: its schema (rules, facts, triggers, cases, form, register) and the checks compiled from it."""
