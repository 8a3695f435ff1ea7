"""Train (layer 5): the epoch loop, the step engine, the teacher, resume, trace, run resolution.

May import: core, config, parallel, store, data, methods, models.
"""
