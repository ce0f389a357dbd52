"""Shared contracts of chaosext: settings and the experiment configuration, errors, names, the lab's state file,
backend credentials. Every other package may import these; this package imports nothing else of chaosext."""
