"""Render the shipped tenancy artefacts for a target's own names: rules, dashboard, k6's load plan (``chaosext
render``)."""
