"""The models, each in its own folder behind one interface (networks.py builds and loads them)."""
