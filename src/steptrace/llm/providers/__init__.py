"""Provider implementations; each third-party SDK is imported only by its module."""
