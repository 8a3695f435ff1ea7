"""Config (layer 1): ``RunConfig``, ``CertifyConfig``, engine options, profiles, recipe scaling, choices, subset syntax.

May import: core.
"""
