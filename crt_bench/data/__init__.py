"""Data (layer 4): datasets -> tensors, batches (resident, per rank, from folders).

May import: core, config, parallel, store.
"""
