"""impact-rt: a fast deployment runtime for IMPACT text-to-audio generation."""
__version__ = "0.1.0"
