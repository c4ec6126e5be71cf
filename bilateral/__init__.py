"""bilateral: reproduce and extend "Deep learning in a bilateral brain with hemispheric specialization"."""

__version__ = "0.1.0"
