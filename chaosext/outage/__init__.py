"""The outage itself: watching it tick by tick, deciding whether to abort, and judging what was recorded."""
