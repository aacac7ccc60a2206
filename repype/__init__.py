"""repype: reproducible batch processing with pipelines, on a content-addressed Zarr store."""


def __getattr__(name: str) -> str:
    # `__version__` is read from the package metadata on first use, so `import repype` stays cheap.
    if name == "__version__":
        from repype.version import VERSION

        return VERSION
    raise AttributeError(f"module 'repype' has no attribute {name!r}")
