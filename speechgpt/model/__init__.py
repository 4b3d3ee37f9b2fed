"""Causal LMs with speech units in their vocabulary: loading, vocabulary extension, tiny builders."""
