"""The foveated-adapter SAM: adapters, foveated attention, encoder/decoder drivers and checkpoints."""
