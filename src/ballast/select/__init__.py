"""The select stage: budgeted, diversity-aware selection, and its coverage beside the pilot's."""
