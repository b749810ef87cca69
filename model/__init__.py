"""Pure computation for ShiftWatch: data, vocabularies, the Transformer, training, evaluation.

Nothing in this package talks to Kafka; every class is testable in milliseconds.
"""
