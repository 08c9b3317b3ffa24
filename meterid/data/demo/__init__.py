"""Procedural demo dataset: photo-like pictures of fictional electricity meters.

``catalog`` defines the meter classes (families sharing a casing, differing in details),
``render`` draws one meter, ``photo`` puts it in a field-photo scene with capture nuisances and
``generate`` writes the ImageFolder dataset in parallel.
"""
