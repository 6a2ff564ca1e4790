"""Local fakes of third-party clouds (real HTTP servers that record what they get)."""
