"""Torch-free data tooling shared by every part: scanning class folders, manifests, phantoms."""
