"""The engine core: pure Python, no Django. ``workflow`` re-exports its public names."""
